"""Does self-supervised pretraining pay for stage 2? (issue 17, item 6; prints figures, not a test)

1. Unlabelled cells: the committed pipeline's candidates (cells and objects set aside alike, at
   most `--per-field` per field, the most likely cells first) on the **training** fields of both
   collections: the CRIC training split (seed 2021, as `train-classifier`) and the LBC training
   part (`field_split`, seed 2021; resized x1.77 to CRIC's scale). No label is read.
2. SimCLR (`inference.train.pretrain`) on them: `--ssl-epochs` of `--ssl-samples` patches.
3. The same supervised training twice on the CRIC training cells (`train_classifier`, the
   defaults of `train-classifier`, `--epochs` of `--samples`), once from the pretrained network
   and once from random weights (same seed), both scored on the CRIC validation cells: stage 2's
   AUC (abnormal vs NILM) and 4-class accuracy, calibrated on validation as `train-classifier`
   does. The test fields of both collections are never read.

    .venv/bin/python benchmarks/ssl_pretrain.py [--per-field 40] [--ssl-epochs 8] [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inference.classifier import ClassifierConfig  # noqa: E402
from inference.data import default_data_dir  # noqa: E402
from inference.data.cric import load_split  # noqa: E402
from inference.train import cric_patches, training_patch_px  # noqa: E402

LBC_TO_CRIC = 1.77  # the LBC fields' scale factor to CRIC's (lbc/README)
SSL_JITTER_PX = 12  # the views' shift off centre (pretrain_classifier's default)
TRAIN_JITTER_PX = 16  # train-classifier's default


def patch(jitter: float) -> int:
    """Patch side with room for any rotation of the crop plus the shift (as train-classifier)."""
    return training_patch_px(ClassifierConfig().crop_px, jitter)


def harvest(
    dataset: Any, split: dict[str, list[str]], per_field: int, patch: int, limit: int | None
) -> tuple[np.ndarray, dict[str, int]]:
    """Patches around the committed pipeline's candidates on the training fields of both sets."""
    from inference.data.fields import field_split, read_field_labels
    from inference.pipeline import Pipeline
    from inference.scale import rescaled
    from inference.slides import crop_padded, read_image

    lbc = default_data_dir() / "lbc"
    lbc_train = field_split(read_field_labels(lbc / "fields.csv"))["train"]
    lbc_files = [lbc / "images" / n for n in lbc_train if (lbc / "images" / n).is_file()]
    fields = [(dataset.image_path(n), 1.0) for n in split["train"][:limit]]
    fields += [(f, LBC_TO_CRIC) for f in lbc_files[:limit]]
    pipeline = Pipeline.default(device="cpu")
    half = patch // 2
    out: list[np.ndarray] = []
    counts = {"cric_fields": len(split["train"][:limit]), "lbc_fields": 0, "patches": 0}
    for path, scale in fields:
        image = rescaled(read_image(path), scale)
        counts["lbc_fields"] += int(scale != 1.0)
        (result,) = pipeline.analyse_arrays([image])
        candidates = sorted(result.cells + result.set_aside, key=lambda c: -c.detection_score)
        for c in candidates[:per_field]:
            x, y = c.box.centre
            out.append(crop_padded(image, round(x) - half, round(y) - half, patch, patch))
    counts["patches"] = len(out)
    return np.stack(out), counts


def supervised(
    train: Any, val: Any, init: Any, epochs: int, samples: int, bf16: bool
) -> dict[str, Any]:
    from inference.train import train_classifier

    t0 = time.monotonic()
    result = train_classifier(
        train, val, epochs=epochs, samples_per_epoch=samples, init_from=init, bf16=bf16, seed=0
    )
    m = result.val_metrics
    return {
        "auc": m["abnormal_vs_nilm"].get("auc"),
        "four_class_accuracy": m["four_class"].get("accuracy"),
        "four_class_balanced": m["four_class"].get("balanced_accuracy"),
        "best_epoch": result.best_epoch,
        "minutes": (time.monotonic() - t0) / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-field", type=int, default=40)
    parser.add_argument("--ssl-epochs", type=int, default=8)
    parser.add_argument("--ssl-samples", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=15, help="supervised epochs, each arm")
    parser.add_argument("--samples", type=int, default=3072, help="supervised samples per epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (AMX CPUs)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ssl")
    parser.add_argument("--limit", type=int, default=None, help="fields per set (a quick try)")
    parser.add_argument(
        "--pretrain-only",
        action="store_true",
        help="save runs/ssl/pretrained.pt and stop (no supervised comparison)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from inference.checkpoints import save_checkpoint
    from inference.train.pretrain import pretrain_classifier, pretrained_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    dataset, split, _ = load_split(default_data_dir(), 2021)  # as train-classifier's default
    t0 = time.monotonic()
    patches, counts = harvest(dataset, split, args.per_field, patch(SSL_JITTER_PX), args.limit)
    print(f"unlabelled cells: {counts} in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    t0 = time.monotonic()
    pre = pretrain_classifier(
        patches, epochs=args.ssl_epochs, samples_per_epoch=args.ssl_samples, bf16=args.bf16
    )
    ssl_minutes = (time.monotonic() - t0) / 60
    losses = [round(r["train_loss"], 3) for r in pre.history]
    print(f"SimCLR: {ssl_minutes:.1f} min, loss by epoch {losses}", flush=True)
    ckpt = pretrained_checkpoint(pre, {"patches": counts})
    # for `train-classifier --init-from` (the whole recipe from the pretrained network)
    save_checkpoint(args.out / "pretrained.pt", stage="classifier", model=pre.model, meta=ckpt.meta)
    del patches
    if args.pretrain_only:
        print(f"saved {args.out / 'pretrained.pt'}")
        return
    size = patch(TRAIN_JITTER_PX)
    train = cric_patches(dataset, split["train"], size, desc="train crops")
    val = cric_patches(dataset, split["val"], size, desc="val crops")
    arms = {}
    for name, init in (("pretrained", ckpt), ("random", None)):
        arms[name] = supervised(train, val, init, args.epochs, args.samples, args.bf16)
        print(f"{name:>10}: {json.dumps(arms[name])}", flush=True)
    report = {"unlabelled": counts, "ssl_minutes": ssl_minutes, "ssl_loss": losses, **arms,
              "settings": vars(args) | {"out": str(args.out)}}  # fmt: skip
    (args.out / "ssl_pretrain.json").write_text(json.dumps(report, indent=2))
    d_auc = (arms["pretrained"]["auc"] or 0) - (arms["random"]["auc"] or 0)
    d_acc = (arms["pretrained"]["four_class_accuracy"] or 0) - (
        arms["random"]["four_class_accuracy"] or 0
    )
    print(
        f"CRIC validation cells, {args.epochs} supervised epochs: pretrained minus random: "
        f"AUC {d_auc:+.3f}, 4-class accuracy {d_acc:+.3f}; {args.out / 'ssl_pretrain.json'}"
    )


if __name__ == "__main__":
    main()
