"""The CLI commands (see __main__.py). Each returns a JSON-able dict that the CLI prints."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import plain, save_checkpoint
from .data.cric import CricDataset, balanced_split, data_hash
from .errors import InputError
from .types import BETHESDA_CLASSES

CITATION = (
    'Rezende et al., "Cric searchable image database as a public platform for conventional pap '
    'smear cytology data", Scientific Data 8:151 (2021), doi:10.1038/s41597-021-00933-8'
)


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(data), indent=2) + "\n")
    return path


def _setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(max(1, int(args.threads)))


def _bf16(args: argparse.Namespace) -> bool:
    from .train import cpu_supports_bf16

    choice = getattr(args, "bf16", "off")
    return choice == "on" or (choice == "auto" and cpu_supports_bf16())


def _load_split(
    data_dir: Path | None, split_seed: int
) -> tuple[CricDataset, dict[str, list[str]], int]:
    dataset = CricDataset.load(data_dir)
    split, seed = balanced_split(dataset.images, seed=split_seed)
    return dataset, split, seed


def _data_meta(dataset: CricDataset, split: dict[str, list[str]], seed: int) -> dict[str, Any]:
    return {
        "name": "CRIC Cervix fields (shared/data/cric, 1280 px wide)",
        "citation": CITATION,
        "hash": data_hash(dataset.cells_csv, dataset.images),
        "split_seed": seed,
        "split": split,
        "split_method": "by image; stratified on each image's rarest abnormal class; 70/15/15; "
        "seed chosen among 200 for balanced per-class cell shares (labels only)",
    }


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The training-loop options both stages take from the command line."""
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "max_seconds": args.max_minutes * 60 if args.max_minutes else None,
        "bf16": _bf16(args),
        "ema_decay": args.ema_decay or None,
    }


def _training_meta(
    args: argparse.Namespace, result: Any, seconds: float, **extra: Any
) -> dict[str, Any]:
    """How a checkpoint was trained: the shared options, the run, and the stage's own ones."""
    return {
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        **{k: v for k, v in _run_options(args).items() if k not in ("epochs", "max_seconds")},
        "seconds": seconds,
        "threads": args.threads,
        "torch": torch.__version__,
        "host": platform.machine(),
        "params": sum(p.numel() for p in result.model.parameters()),
        **extra,
    }


def train_detector_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .detector import DetectorConfig
    from .plots import plot_training_curves
    from .train import load_cric_fields, train_detector

    _setup(args)
    config = DetectorConfig()
    started = time.monotonic()
    if getattr(args, "data", None) is not None:  # a PapReview export (+ CRIC with --merge-base)
        from .data.export import detector_data

        train, val, data_meta = detector_data(
            args.data,
            scale=config.input_scale,
            merge_base=args.merge_base,
            data_dir=args.data_dir,
            split_seed=args.split_seed,
        )
    else:
        dataset, split, seed = _load_split(args.data_dir, args.split_seed)
        train = load_cric_fields(
            dataset, split["train"], scale=config.input_scale, desc="train images"
        )
        val = load_cric_fields(dataset, split["val"], scale=config.input_scale, desc="val images")
        data_meta = _data_meta(dataset, split, seed)
    result = train_detector(
        train,
        val,
        config=config,
        crops_per_image=args.crops_per_image,
        crop_size=args.crop_size,
        **_run_options(args),
    )
    seconds = time.monotonic() - started
    meta = {
        "arch": "DetectorNet",
        "config": config.to_dict(),
        "heat_channels": ["cell", "abnormal"],
        "classes": list(BETHESDA_CLASSES),
        "normalisation": {"mean": list(config.mean), "std": list(config.std)},
        "input_scale": config.input_scale,
        "box_px": config.box_px,
        "model_mpp": None,
        "thresholds": result.thresholds,
        "match_radius_px": 20.0,
        "data": data_meta,
        "training": _training_meta(
            args,
            result,
            seconds,
            crops_per_image=args.crops_per_image,
            crop_size=args.crop_size,
            selection="lowest validation loss",
        ),
        "metrics": {"val": result.val_metrics},
        "history": result.history,
    }
    out: Path = args.out
    ckpt = out / "detector.pt"
    version = save_checkpoint(ckpt, stage="detector", model=result.model, meta=plain(meta))
    plot_training_curves(result.history, out / "detector_curves.png", "stage 1 detector")
    summary = {
        "checkpoint": str(ckpt),
        "version": version,
        "best_epoch": result.best_epoch,
        "seconds": seconds,
        "val": result.val_metrics,
    }
    write_json(out / "detector_metrics.json", {**summary, "history": result.history})
    return plain(summary)


def train_classifier_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .classifier import ClassifierConfig
    from .plots import plot_confusion_matrix, plot_training_curves
    from .train import class_counts, cric_patches, train_classifier

    _setup(args)
    config = ClassifierConfig(crop_px=args.crop_px)
    # room for any rotation of the crop plus the centre jitter without invented border pixels
    patch = round(config.crop_px * 1.5 + 2 * args.jitter_px)
    started = time.monotonic()
    if getattr(args, "data", None) is not None:  # a PapReview export (+ CRIC with --merge-base)
        from .data.export import classifier_data

        train, val, data_meta = classifier_data(
            args.data,
            patch=patch,
            merge_base=args.merge_base,
            data_dir=args.data_dir,
            split_seed=args.split_seed,
        )
    else:
        dataset, split, seed = _load_split(args.data_dir, args.split_seed)
        train = cric_patches(dataset, split["train"], patch, desc="train crops")
        val = cric_patches(dataset, split["val"], patch, desc="val crops")
        data_meta = _data_meta(dataset, split, seed)
    result = train_classifier(
        train,
        val,
        config=config,
        samples_per_epoch=args.samples_per_epoch,
        balance_power=args.balance_power,
        loss_power=args.loss_power,
        jitter_px=args.jitter_px,
        **_run_options(args),
    )
    seconds = time.monotonic() - started
    meta = {
        "arch": "CellClassifier",
        "config": config.to_dict(),
        "classes": list(BETHESDA_CLASSES),
        "normalisation": {"mean": list(config.mean), "std": list(config.std)},
        "crop_px": config.crop_px,
        "model_mpp": None,
        "crop_um": None,
        "temperature": result.temperature,
        "abnormal_threshold": result.abnormal_threshold,
        "data": {
            **data_meta,
            "train_cells": class_counts(train.labels),
            "val_cells": class_counts(val.labels),
        },
        "training": _training_meta(
            args,
            result,
            seconds,
            samples_per_epoch=args.samples_per_epoch,
            balance_power=args.balance_power,
            loss_power=args.loss_power,
            jitter_px=args.jitter_px,
            selection="best validation AUC(abnormal vs NILM) + 4-class balanced accuracy",
        ),
        "metrics": {"val": result.val_metrics},
        "history": result.history,
    }
    out: Path = args.out
    ckpt = out / "classifier.pt"
    version = save_checkpoint(ckpt, stage="classifier", model=result.model, meta=plain(meta))
    plot_training_curves(result.history, out / "classifier_curves.png", "stage 2 classifier")
    if result.val_metrics:
        six = result.val_metrics["six_class"]
        plot_confusion_matrix(
            six["confusion_matrix"],
            six["classes"],
            out / "classifier_val_confusion.png",
            "classifier, validation crops",
        )
    summary = {
        "checkpoint": str(ckpt),
        "version": version,
        "best_epoch": result.best_epoch,
        "seconds": seconds,
        "temperature": result.temperature,
        "abnormal_threshold": result.abnormal_threshold,
        "val": result.val_metrics,
    }
    write_json(out / "classifier_metrics.json", {**summary, "history": result.history})
    return plain(summary)


# ------------------------------------------------------------------------------------------
# Inference commands
# ------------------------------------------------------------------------------------------


def _pipeline(args: argparse.Namespace, **kwargs: Any) -> Any:
    from .pipeline import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR, Pipeline

    det = getattr(args, "detector", None) or DEFAULT_DETECTOR
    cls = getattr(args, "classifier", None) or DEFAULT_CLASSIFIER
    batch = getattr(args, "batch_size", 8)
    kwargs.setdefault("cpu_bf16", _bf16(args))
    return Pipeline.from_checkpoints(det, cls, device=args.device, batch_size=batch, **kwargs)


def cell_to_json(cell: Any) -> dict[str, Any]:
    return {
        "box": {
            "x": cell.box.x,
            "y": cell.box.y,
            "width": cell.box.width,
            "height": cell.box.height,
        },
        "centre": list(cell.box.centre),
        "label": cell.label,
        "probabilities": cell.probabilities,
        "detection_score": cell.detection_score,
    }


def result_to_json(name: str, result: Any) -> dict[str, Any]:
    info = result.info
    return {
        "image": name,
        "slide": {
            "format": info.format,
            "kind": str(info.kind),
            "width": info.width,
            "height": info.height,
            "mpp": info.mpp,
            "level_count": info.level_count,
        },
        "model_versions": result.model_versions,
        "device": result.device,
        "timings": result.timings,
        "cells": [cell_to_json(c) for c in result.cells],
    }


def calibrate_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from .checkpoints import load_checkpoint, load_weights
    from .classifier import ClassifierConfig, build_classifier
    from .fusion import Fusion, fit_fusion
    from .metrics import classification_metrics, match_points, roc_auc
    from .train import choose_abnormal_threshold
    from .types import is_abnormal

    _setup(args)
    pipeline = _pipeline(args, use_fusion=False, tta_views=args.tta_views)
    dataset = CricDataset.load(args.data_dir)
    split = pipeline.classifier_meta.get("data", {}).get("split", {})
    det_split = pipeline.detector_meta.get("data", {}).get("split", {})
    if split.get("test") != det_split.get("test") or split.get("val") != det_split.get("val"):
        raise InputError("the detector and classifier were trained on different splits")
    names = [n for n in split.get("val", []) if n in dataset.images]
    if not names:
        raise InputError("the classifier checkpoint names no validation images found in the data")
    p2: list[float] = []
    s1: list[float] = []
    truth: list[str] = []
    probs6: list[list[float]] = []
    for name in tqdm(names, desc="calibrate (val)", unit="img"):
        res = pipeline.run(dataset.image_path(name))
        cells = dataset.images[name].cells
        gt = np.array([(c.x, c.y) for c in cells]).reshape(-1, 2)
        xy = np.array([c.box.centre for c in res.cells]).reshape(-1, 2)
        for pi, gi in match_points(xy, gt, args.radius):
            cell = res.cells[pi]
            p2.append(1.0 - cell.probabilities["NILM"])
            s1.append(cell.detection_score)
            truth.append(cells[gi].label)
            probs6.append([cell.probabilities[k] for k in BETHESDA_CLASSES])
    y = np.array([is_abnormal(t) for t in truth])
    if y.all() or not y.any():
        raise InputError("validation cells hold a single class: cannot calibrate")
    a, b, c = fit_fusion(np.array(p2), np.array(s1), y)
    base = Fusion(a, b, c, pipeline.model_versions["detector"], 0.5)
    fused = base.apply(np.array(probs6), np.array(s1))
    p_fused = 1.0 - fused[:, BETHESDA_CLASSES.index("NILM")]
    threshold = choose_abnormal_threshold(p_fused, y, 0.95)
    fusion = Fusion(a, b, c, base.detector_version, threshold)
    auc_cls, auc_det, auc_fused = roc_auc(y, p2), roc_auc(y, s1), roc_auc(y, p_fused)
    from .classifier import decide_labels

    val = classification_metrics(truth, decide_labels(fused, threshold), p_fused)
    report = {
        "val_images": len(names),
        "val_matched_cells": len(truth),
        "tta_views": pipeline.tta_views,
        "auc_classifier": auc_cls,
        "auc_detector": auc_det,
        "auc_fused": auc_fused,
        "fusion": fusion.to_dict(),
        "val_at_threshold": {
            "abnormal_vs_nilm": val["abnormal_vs_nilm"],
            "four_class_accuracy": val["four_class"]["accuracy"],
            "six_class_accuracy": val["six_class"]["accuracy"],
        },
    }
    ckpt = load_checkpoint(args.classifier, stage="classifier")
    meta = dict(ckpt.meta)
    meta["tta_views"] = pipeline.tta_views
    used = auc_fused is not None and auc_cls is not None and auc_fused >= auc_cls
    base_version = str(meta.get("base_version", meta.get("version")))
    meta["base_version"] = base_version
    # the version names what changes the outputs: weights, test-time views, fusion
    version = base_version + (f"-tta{pipeline.tta_views}" if pipeline.tta_views > 1 else "")
    if used:
        meta["fusion"] = {**fusion.to_dict(), "val": plain(report)}
        version += f"-fused-{base.detector_version.rsplit('-', 1)[-1]}"
    else:
        meta.pop("fusion", None)
    meta["version"] = version
    model = load_weights(build_classifier(ClassifierConfig.from_dict(meta["config"])), ckpt)
    out = args.out or args.classifier
    version = save_checkpoint(out, stage="classifier", model=model, meta=meta)
    return plain({**report, "fusion_used": used, "checkpoint": str(out), "version": version})


def _thumbnail(path: Path, max_side: int = 2048) -> tuple[np.ndarray, float]:
    """The image itself (fields) or a whole low pyramid level (WSI), and its scale to level 0."""
    from .slides import open_slide

    with open_slide(path) as reader:
        w, h = reader.dimensions
        level = reader.best_level_for_downsample(max(w, h) / max_side)
        lw, lh = reader.level_dimensions[level]
        if lw * lh > 4096 * 4096:
            raise InputError(f"{path.name}: no pyramid level small enough for an overlay")
        img = reader.read_region((0, 0), level, (lw, lh))
        return img, 1.0 / reader.level_downsamples[level]


def predict_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image
    from tqdm import tqdm

    from .overlay import draw_overlay

    _setup(args)
    pipeline = _pipeline(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(args.images, desc="predict", unit="slide"):
        path = Path(path)
        bar = tqdm(desc=path.name, unit="tile", leave=False)

        def progress(done: int, total: int, bar: Any = bar) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = pipeline.run(path, progress=progress)
        bar.close()
        stem = path.stem
        json_path = write_json(out / f"{stem}.json", result_to_json(path.name, result))
        img, scale = _thumbnail(path)
        overlay = draw_overlay(img, result.cells, scale=scale)
        png_path = out / f"{stem}_overlay.png"
        Image.fromarray(overlay).save(png_path)
        n_abn = sum(c.label != "NILM" for c in result.cells)
        written.append(
            {
                "image": str(path),
                "cells": len(result.cells),
                "abnormal_cells": n_abn,
                "json": str(json_path),
                "overlay": str(png_path),
                "seconds": result.timings.get("total"),
            }
        )
    return {
        "model_versions": pipeline.model_versions,
        "device": str(pipeline.device),
        "outputs": written,
    }


def _split_filter(
    names: list[str], choice: str, meta_splits: list[dict[str, list[str]]]
) -> tuple[list[str], dict[str, Any]]:
    known: dict[str, str] = {}
    for sp in meta_splits:
        for part, members in sp.items():
            for m in members:
                # an image used for training or tuning by either model is never "test"
                if known.get(m) in ("train", "val") and part == "test":
                    continue
                known[m] = part
    if choice == "all":
        kept = names
    elif choice == "auto":
        kept = [n for n in names if known.get(n) not in ("train", "val")]
    else:
        kept = [n for n in names if known.get(n) == choice]
    info = {
        "split": choice,
        "images_in_csv_and_folder": len(names),
        "images_evaluated": len(kept),
        "skipped_train_or_val": sum(known.get(n) in ("train", "val") for n in names)
        if choice == "auto"
        else None,
        "unknown_to_models": sum(n not in known for n in kept),
    }
    return kept, info


def evaluate_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from .classifier import abnormal_probability
    from .data.cric import read_cells_csv
    from .metrics import ImageEval, check_targets, detection_metrics
    from .plots import plot_confusion_matrix

    _setup(args)
    images_dir: Path = args.images
    if not images_dir.is_dir():
        raise InputError(f"--images {images_dir} is not a folder")
    table = read_cells_csv(args.cells)
    present = sorted(n for n in table if (images_dir / n).is_file())
    missing = sorted(n for n in table if not (images_dir / n).is_file())
    if not present:
        raise InputError(
            f"none of the {len(table)} images named in {args.cells} is in {images_dir}"
        )
    pipeline = _pipeline(args)
    splits = [
        m.get("data", {}).get("split", {})
        for m in (pipeline.detector_meta, pipeline.classifier_meta)
    ]
    names, split_info = _split_filter(present, args.split, splits)
    if not names:
        raise InputError(f"no images left to evaluate with --split {args.split}")
    evals = []
    seconds = []
    for name in tqdm(names, desc="evaluate", unit="img"):
        res = pipeline.run(images_dir / name)
        seconds.append(res.timings.get("total", 0.0))
        ann = table[name]
        probs = np.array(
            [[c.probabilities[k] for k in BETHESDA_CLASSES] for c in res.cells], np.float64
        ).reshape(-1, len(BETHESDA_CLASSES))
        evals.append(
            ImageEval(
                name=name,
                gt_xy=np.array([(c.x, c.y) for c in ann.cells], np.float64).reshape(-1, 2),
                gt_labels=[c.label for c in ann.cells],
                pred_xy=np.array([c.box.centre for c in res.cells], np.float64).reshape(-1, 2),
                pred_labels=[c.label for c in res.cells],
                pred_p_abnormal=abnormal_probability(probs) if len(probs) else np.zeros(0),
                extra={"probs": probs},
            )
        )
    metrics = detection_metrics(evals, radius=args.radius)
    # the same predictions under the plain argmax rule (no sensitivity-first threshold)
    argmax_evals = [
        ImageEval(
            e.name,
            e.gt_xy,
            e.gt_labels,
            e.pred_xy,
            [BETHESDA_CLASSES[int(i)] for i in e.extra["probs"].argmax(1)]
            if len(e.pred_xy)
            else [],
            e.pred_p_abnormal,
        )
        for e in evals
    ]
    argmax_metrics = detection_metrics(argmax_evals, radius=args.radius)
    result = {
        "model_versions": pipeline.model_versions,
        "device": str(pipeline.device),
        "images_dir": str(images_dir),
        "cells_csv": str(args.cells),
        **split_info,
        "missing_images": len(missing),
        "seconds_per_image": float(np.mean(seconds)),
        "operating_point": {
            "stage1_cell_threshold": pipeline.cell_threshold,
            "stage1_abnormal_threshold": pipeline.abnormal_threshold,
            "stage2_abnormal_threshold": pipeline.decision_threshold,
            "temperature": pipeline.temperature,
        },
        "metrics": metrics,
        "targets": check_targets(metrics),
        "argmax_decision": {
            "note": "labels = argmax of the calibrated probabilities instead of the "
            "validation-chosen P(abnormal) threshold",
            "abnormal_recall": argmax_metrics["abnormal_recall"],
            "fp_per_image": argmax_metrics["fp_per_image"],
            "fp_per_image_upper_bound": argmax_metrics["fp_per_image_upper_bound"],
            "matched_cells": argmax_metrics["matched_cells"],
            "targets": check_targets(argmax_metrics),
        },
    }
    if args.out is not None:
        out: Path = args.out
        write_json(out, result)
        for view in ("six_class", "four_class"):
            rep = metrics["matched_cells"][view]
            plot_confusion_matrix(
                rep["confusion_matrix"],
                rep["classes"],
                out.with_name(f"{out.stem}_confusion_{view}.png"),
                f"matched cells, {view.replace('_', '-')} ({len(names)} images)",
            )
    return plain(result)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def evaluate_classifier_cmd(args: argparse.Namespace) -> dict[str, Any]:
    import cv2
    from tqdm import tqdm

    from .classifier import abnormal_probability, decide_labels
    from .metrics import classification_metrics
    from .plots import plot_confusion_matrix
    from .slides import read_image

    _setup(args)
    folder: Path = args.folder
    if not folder.is_dir():
        raise InputError(f"--folder {folder} is not a folder")
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir())
    unknown = [d.name for d in subdirs if d.name not in BETHESDA_CLASSES]
    if unknown:
        codes = ", ".join(BETHESDA_CLASSES)
        raise InputError(f"subfolder(s) {', '.join(unknown)} are not Bethesda codes ({codes})")
    files = [
        (f, d.name)
        for d in subdirs
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise InputError(f"no images found under {folder}/<class>/")
    from .checkpoints import load_checkpoint, load_weights
    from .classifier import ClassifierConfig, build_classifier, normalise_crops
    from .pipeline import DEFAULT_CLASSIFIER, resolve_device

    ckpt = load_checkpoint(args.classifier or DEFAULT_CLASSIFIER, stage="classifier")
    config = ClassifierConfig.from_dict(ckpt.meta["config"])
    model = load_weights(build_classifier(config), ckpt).eval()
    device = resolve_device(args.device)
    model.to(device)
    temperature = float(ckpt.meta.get("temperature", 1.0))
    threshold = float(ckpt.meta.get("abnormal_threshold", 0.5))
    c = config.crop_px
    probs_list = []
    for s in tqdm(range(0, len(files), 128), desc="classify", unit="batch"):
        crops = []
        for f, _ in files[s : s + 128]:
            img = read_image(f)
            if img.shape[:2] != (c, c):
                img = cv2.resize(img, (c, c), interpolation=cv2.INTER_AREA)
            crops.append(img)
        x = normalise_crops(torch.from_numpy(np.stack(crops)).to(device), config.mean, config.std)
        with torch.inference_mode():
            probs_list.append(torch.softmax(model(x).float() / temperature, 1).cpu().numpy())
    probs = np.concatenate(probs_list).astype(np.float64)
    truth = [lab for _, lab in files]
    pred = decide_labels(probs, threshold)
    metrics = classification_metrics(truth, pred, abnormal_probability(probs))
    result = {
        "classifier": ckpt.version,
        "folder": str(folder),
        "crops": len(files),
        "abnormal_threshold": threshold,
        "temperature": temperature,
        **metrics,
    }
    if args.out is not None:
        write_json(args.out, result)
        rep = metrics["six_class"]
        plot_confusion_matrix(
            rep["confusion_matrix"],
            rep["classes"],
            args.out.with_name(f"{args.out.stem}_confusion.png"),
            "classifier on crops",
        )
    return plain(result)


def _bench_images(args: argparse.Namespace) -> tuple[list[np.ndarray], str]:
    import cv2

    from .data import default_data_dir
    from .slides import read_image
    from .synthetic import synthetic_field

    folder = args.images or (default_data_dir() / "cric" / "images")
    size = None
    if args.field_size:
        try:
            w, h = (int(v) for v in args.field_size.lower().split("x"))
            size = (w, h)
        except ValueError as exc:
            raise InputError("--field-size must look like 2048x1536") from exc
    images: list[np.ndarray] = []
    source = str(folder)
    if folder.is_dir():
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[
            : args.limit
        ]
        images = [read_image(f) for f in files]
    elif args.images is not None:
        raise InputError(f"--images {folder} is not a folder")
    if not images:
        rng = np.random.default_rng(0)
        images = [
            synthetic_field(
                1280,
                960,
                cells=[(float(x), float(y), 10.0) for x, y in rng.uniform(50, 900, (40, 2))],
                seed=i,
            )
            for i in range(args.limit)
        ]
        source = "synthetic"
    if size is not None:
        images = [cv2.resize(im, size, interpolation=cv2.INTER_LINEAR) for im in images]
    return images, source


def bench_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .bench import bench_fields, bench_wsi
    from .metrics import TARGETS

    _setup(args)
    images, source = _bench_images(args)
    pipeline = _pipeline(args)
    result: dict[str, Any] = {"images": source, "model_versions": pipeline.model_versions}
    result.update(bench_fields(pipeline, images, reference_limit=args.reference_limit))
    result["targets"] = {
        "speed": {
            "target": TARGETS["speed"],
            "measured_speedup": result["speedup"],
            "met": result["speedup"] >= 40 if pipeline.device.type == "cpu" else None,
        }
    }
    if pipeline.device.type == "cuda":
        result["targets"]["gpu_throughput"] = {
            "target": ">= 300 fields/s of 2048x1536 with batched tiles",
            "measured_fields_per_s": result["ours"]["fields_per_s"],
            "field_size": result["field_size"],
            "met": result["ours"]["fields_per_s"] >= 300
            if result["field_size"] == [2048, 1536]
            else None,
        }
    if args.wsi:
        path = args.wsi_path or Path("runs") / f"bench_wsi_{args.wsi}.tiff"
        wsi = bench_wsi(
            args.wsi,
            path,
            detector=args.detector,
            classifier=args.classifier,
            device=args.device,
            threads=args.threads,
            cpu_bf16=pipeline.cpu_bf16,
        )
        result["wsi"] = wsi
        result["targets"]["memory"] = {
            "target": TARGETS["memory"],
            "measured_peak_rss_mib": wsi["peak_rss_mib"],
            "met": wsi["peak_rss_mib"] < 2048 if str(pipeline.device) == "cpu" else None,
        }
    if args.out is not None:
        write_json(args.out, result)
    return plain(result)
