"""Command line: `python -m inference <command> ...` (run with --help for each command).

Errors a user causes (bad file, bad checkpoint, missing data) end with exit code 2 and one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError


def _widths(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected four positive integers like 24,32,64,128, not {text!r}"
        )
    return (int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")


def _add_bf16(p: argparse.ArgumentParser, what: str, default: str = "auto") -> None:
    p.add_argument(
        "--bf16",
        default=default,
        choices=["auto", "on", "off"],
        help=f"bfloat16 autocast on CPU for {what} (auto: when the CPU has AVX512-BF16/AMX)",
    )


def _add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="train on a PapReview dataset export (folder or zip) instead of CRIC",
    )
    p.add_argument(
        "--merge-base", action="store_true", help="with --data: add the CRIC base data (--data-dir)"
    )


def _add_start(p: argparse.ArgumentParser) -> None:
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="fine-tune: start from this checkpoint's weights (and its architecture)",
    )
    start.add_argument(
        "--arch-from",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="this checkpoint's architecture with random weights (from scratch)",
    )


def _add_ema(p: argparse.ArgumentParser, default: float) -> None:
    p.add_argument(
        "--ema-decay",
        type=float,
        default=default,
        help="validate and keep an exponential moving average of the weights with this "
        "per-step decay (0: the raw weights)",
    )


def _upscale(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor auto") from None


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--detector", type=Path, default=None, help="detector checkpoint (default: committed)"
    )
    p.add_argument(
        "--classifier", type=Path, default=None, help="classifier checkpoint (default: committed)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=8, help="tiles per detector batch")
    _add_bf16(p, "inference")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference", description="PapReview two-stage cytology pipeline."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-detector", help="train stage 1 on CRIC (train split)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding cric/ (default: $PAPREVIEW_DATA_DIR or ../shared/data)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/detector"))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--crops-per-image", type=int, default=4)
    p.add_argument("--crop-size", type=int, default=256)
    _add_ema(p, 0.995)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=2021)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much training")
    _add_export_args(p)
    _add_start(p)
    _add_bf16(p, "training", default="off")
    _add_common(p)

    p = sub.add_parser("train-classifier", help="train stage 2 on CRIC cell crops (train split)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/classifier"))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--samples-per-epoch", type=int, default=3072)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--crop-px", type=int, default=112)
    p.add_argument(
        "--widths",
        type=_widths,
        default=None,
        metavar="W0,W1,W2,W3",
        help="channels of the stem and the three residual stages of a new classifier "
        "(default 24,32,64,128); not with --init-from or --arch-from",
    )
    p.add_argument(
        "--jitter-px",
        type=float,
        default=16.0,
        help="random shift of the crop centre (level-0 px, each axis): the annotated centres are "
        "off the nucleus by 10-30 px while stage 1 centres its candidates on the nucleus",
    )
    _add_ema(p, 0.998)
    p.add_argument("--balance-power", type=float, default=0.5, help="sampling weight count^-p")
    p.add_argument("--loss-power", type=float, default=0.25, help="loss class weight count^-p")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=2021)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument(
        "--negatives",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="add the NILM patches of a mine-negatives folder to training (repeatable)",
    )
    p.add_argument(
        "--positives",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="add the patches of a mine-negatives --positives folder (the most suspicious "
        "calls of abnormal fields, of the field's class) to training (repeatable)",
    )
    p.add_argument(
        "--not-a-cell",
        action="store_true",
        help="give stage 2 a seventh outcome, not a cell, and teach it the --negatives patches "
        "and the export's rejected calls (instead of NILM); candidates it sets aside are not "
        "shown to reviewers. With --init-from a six-class classifier, its weights start it",
    )
    _add_export_args(p)
    _add_start(p)
    _add_bf16(p, "training", default="off")
    _add_common(p)

    p = sub.add_parser(
        "mine-negatives",
        help="the pipeline's abnormal calls far from marked cells or on NILM fields, as NILM "
        "patches for train-classifier --negatives",
    )
    p.add_argument("--images", type=Path, required=True, help="folder of field images")
    p.add_argument("--cells", type=Path, default=None, help="cells table (CRIC format)")
    p.add_argument("--fields", type=Path, default=None, help="field labels CSV (NILM fields)")
    p.add_argument("--upscale", type=float, default=1.0, help="resize the fields first")
    p.add_argument("--far-px", type=float, default=40.0, help="distance from every marked cell")
    p.add_argument("--max-per-field", type=int, default=40)
    p.add_argument(
        "--positives",
        type=int,
        default=None,
        metavar="N",
        help="with --fields: multiple-instance positives instead, the N most suspicious calls "
        "of each abnormal field of the train part, labelled with the field's class",
    )
    p.add_argument("--patch", type=int, default=200, help="patch side, level-0 px")
    p.add_argument("--out", type=Path, required=True)
    _add_pipeline_args(p)
    _add_common(p)

    p = sub.add_parser(
        "ensemble-classifiers",
        help="one stage-2 checkpoint averaging classifiers trained apart (then run calibrate)",
    )
    p.add_argument("members", type=Path, nargs="+", help="classifier checkpoints, 2 or more")
    p.add_argument("--out", type=Path, required=True, help="the ensemble's checkpoint")
    p.add_argument("--data-dir", type=Path, default=None)
    _add_common(p)

    p = sub.add_parser(
        "calibrate",
        help="fit the late fusion of stage 1 and stage 2 abnormality on validation images",
    )
    p.add_argument("--detector", type=Path, required=True)
    p.add_argument("--classifier", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument(
        "--out", type=Path, default=None, help="new classifier checkpoint (default: in place)"
    )
    p.add_argument("--radius", type=float, default=20.0)
    p.add_argument(
        "--far-budget",
        type=float,
        default=None,
        help="choose the P(abnormal) threshold for at most this many abnormal calls per "
        "validation field farther than 30 px from every marked cell (default: sensitivity "
        ">= 0.95 on matched cells)",
    )
    p.add_argument(
        "--tta-views",
        type=int,
        default=None,
        choices=[1, 2, 4, 8],
        help="stage-2 test-time augmentation: mean over this many flips/rotations of each crop, "
        "stored in the checkpoint with the fusion fitted under it (default: the checkpoint's)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_bf16(p, "inference")
    _add_common(p)

    p = sub.add_parser(
        "estimate-scale",
        help="the images' scale from their nucleus sizes: per field and for the batch (JSON)",
    )
    p.add_argument("images", nargs="+", type=Path, help="field images (or folders of them)")
    _add_common(p)

    p = sub.add_parser("predict", help="run the pipeline on images; JSON + overlay PNG per image")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    _add_pipeline_args(p)
    _add_common(p)

    p = sub.add_parser(
        "evaluate",
        help="run the pipeline on annotated images (or an export's split) and print metrics",
    )
    p.add_argument("--images", type=Path, default=None, help="folder of field images")
    p.add_argument(
        "--cells",
        type=Path,
        default=None,
        help="CSV: image_filename,nucleus_x,nucleus_y,bethesda_system",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a PapReview dataset export (folder or zip) instead of --images/--cells; --split "
        "picks its split (auto: test)",
    )
    p.add_argument(
        "--fields",
        type=Path,
        default=None,
        help="CSV image_filename,field_label (NILM/abnormal) for the field-level AUC "
        "(default: a field is abnormal when it has a marked abnormal cell); without --cells, "
        "the fields it names are evaluated with no marked cell (field-level figures)",
    )
    p.add_argument(
        "--upscale",
        type=_upscale,
        default=1.0,
        help="resize the fields by this factor first (1.77 brings lbc/ to cric/'s scale); "
        "auto: the factor the fields' own nucleus sizes give (inference.scale, one for the batch)",
    )
    p.add_argument(
        "--grey",
        action="store_true",
        help="make the fields monochrome first (a grey camera, an extended-depth-of-field frame)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="metrics JSON (confusion matrices and a reviewer-load / reliability PNG beside it)",
    )
    p.add_argument(
        "--split",
        default="auto",
        choices=["auto", "test", "val", "train", "all"],
        help="auto (default): skip images the models were trained or tuned on (their train/val "
        "split); test/val/train: only that split; all: every image",
    )
    p.add_argument("--radius", type=float, default=20.0, help="match radius, level-0 px")
    _add_pipeline_args(p)
    _add_common(p)

    p = sub.add_parser("evaluate-classifier", help="stage 2 alone on an ImageFolder of cell crops")
    p.add_argument("--folder", type=Path, required=True, help="subfolders named by Bethesda code")
    p.add_argument("--classifier", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_common(p)

    p = sub.add_parser("bench", help="throughput of our pipeline vs the published-method reference")
    p.add_argument("--images", type=Path, default=None, help="folder of field images")
    p.add_argument("--limit", type=int, default=8, help="fields to time (default 8)")
    p.add_argument("--reference-limit", type=int, default=2, help="fields for the slow reference")
    p.add_argument("--field-size", default=None, help="resize fields to WxH first, e.g. 2048x1536")
    p.add_argument(
        "--wsi",
        type=int,
        default=None,
        metavar="SIDE",
        help="also run a generated SIDE x SIDE pyramidal TIFF (e.g. 40000) and report peak memory",
    )
    p.add_argument(
        "--wsi-path", type=Path, default=None, help="where to write/read the generated WSI"
    )
    p.add_argument("--out", type=Path, default=None)
    _add_pipeline_args(p)
    _add_common(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import commands  # heavy imports (torch) only once a command runs

    handler = {
        "train-detector": commands.train_detector_cmd,
        "train-classifier": commands.train_classifier_cmd,
        "mine-negatives": commands.mine_negatives_cmd,
        "ensemble-classifiers": commands.ensemble_classifiers_cmd,
        "calibrate": commands.calibrate_cmd,
        "predict": commands.predict_cmd,
        "estimate-scale": commands.estimate_scale_cmd,
        "evaluate": commands.evaluate_cmd,
        "evaluate-classifier": commands.evaluate_classifier_cmd,
        "bench": commands.bench_cmd,
    }[args.command]
    try:
        result = handler(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
