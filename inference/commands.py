"""The CLI commands (see __main__.py). Each returns a JSON-able dict that the CLI prints.

Glue only: parse the options, load the data, call the library (`inference.train`,
`inference.calibration`, `inference.evaluation`, `inference.bench`), write the outputs.
Over ~400 lines because it is one function per command (a dozen of them) and their shared
option handling; the algorithms live in the library modules named above.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import plain, save_checkpoint
from .data.cric import CricDataset, load_split, split_meta
from .errors import InputError
from .types import NOT_A_CELL


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(data), indent=2) + "\n")
    return path


def _setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(max(1, int(args.threads)))


def _bf16(args: argparse.Namespace) -> bool:
    from .interface import resolve_cpu_bf16

    return resolve_cpu_bf16(getattr(args, "bf16", "off"))


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


def _save_run(
    args: argparse.Namespace,
    stage: str,
    result: Any,
    meta: dict[str, Any],
    seconds: float,
    **summary: Any,
) -> dict[str, Any]:
    """Write the checkpoint, its training curves and metrics JSON under --out; the summary."""
    from .plots import plot_training_curves

    out: Path = args.out
    ckpt = out / f"{stage}.pt"
    version = save_checkpoint(ckpt, stage=stage, model=result.model, meta=plain(meta))
    title = {"detector": "stage 1 detector", "classifier": "stage 2 classifier"}[stage]
    plot_training_curves(result.history, out / f"{stage}_curves.png", title)
    summary = {
        "checkpoint": str(ckpt),
        "version": version,
        "best_epoch": result.best_epoch,
        "seconds": seconds,
        **summary,
        "val": result.val_metrics,
    }
    write_json(out / f"{stage}_metrics.json", {**summary, "history": result.history})
    return plain(summary)


def _start_from(args: argparse.Namespace, stage: str) -> tuple[dict[str, Any] | None, Any, Any]:
    """(architecture config, checkpoint to fine-tune or None, what the checkpoint records) from
    `--init-from` (its architecture and weights) or `--arch-from` (its architecture, random
    weights); (None, None, None) for the default architecture from random weights."""
    from .checkpoints import load_checkpoint

    init, arch = getattr(args, "init_from", None), getattr(args, "arch_from", None)
    given = init or arch
    if given is None:
        return None, None, None
    ckpt = load_checkpoint(Path(given), stage=stage)
    config = ckpt.meta.get("config")
    if not isinstance(config, dict):
        raise InputError(f"{Path(given).name}: no architecture config in its metadata")
    record = {"version": ckpt.version, "file": Path(given).name}
    if init is None:
        return config, None, {"init_from": None, "architecture_of": record}
    return config, ckpt, {"init_from": record}


def train_detector_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .detector import DetectorConfig
    from .train import load_cric_fields, train_detector
    from .train.detector import detector_checkpoint_meta

    _setup(args)
    base_config, init, start = _start_from(args, "detector")
    config = DetectorConfig.from_dict(base_config) if base_config else DetectorConfig()
    started = time.monotonic()
    if getattr(args, "data", None) is not None:  # a PapReview export (+ CRIC with --merge-base)
        from .data.inputs import detector_data

        train, val, data_meta = detector_data(
            args.data,
            scale=config.input_scale,
            merge_base=args.merge_base,
            data_dir=args.data_dir,
            split_seed=args.split_seed,
        )
    else:
        dataset, split, seed = load_split(args.data_dir, args.split_seed)
        train = load_cric_fields(
            dataset, split["train"], scale=config.input_scale, desc="train images"
        )
        val = load_cric_fields(dataset, split["val"], scale=config.input_scale, desc="val images")
        data_meta = split_meta(dataset, split, seed)
    result = train_detector(
        train,
        val,
        config=config,
        crops_per_image=args.crops_per_image,
        crop_size=args.crop_size,
        init_from=init,
        **_run_options(args),
    )
    seconds = time.monotonic() - started
    training = _training_meta(
        args,
        result,
        seconds,
        crops_per_image=args.crops_per_image,
        crop_size=args.crop_size,
        **(start or {"init_from": None}),
    )
    meta = detector_checkpoint_meta(result, data_meta, training)
    return _save_run(args, "detector", result, meta, seconds)


def train_classifier_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .classifier import ClassifierConfig
    from .plots import plot_confusion_matrix
    from .train import CellPatches, cric_patches, train_classifier, training_patch_px
    from .train.classifier import classifier_checkpoint_meta

    _setup(args)
    base_config, init, start = _start_from(args, "classifier")
    widths = getattr(args, "widths", None)
    if widths is not None and base_config:
        raise InputError("--widths sets a new architecture: not with --init-from or --arch-from")
    config = (
        ClassifierConfig.from_dict(base_config)
        if base_config
        else ClassifierConfig(crop_px=args.crop_px, widths=widths or ClassifierConfig.widths)
    )
    if getattr(args, "not_a_cell", False):
        config = dataclasses.replace(config, not_a_cell=True)
    # what the calls nobody should see are taught as: not a cell, or (six classes) NILM
    negative = NOT_A_CELL if config.not_a_cell else "NILM"
    patch = training_patch_px(config.crop_px, args.jitter_px)
    started = time.monotonic()
    if getattr(args, "data", None) is not None:  # a PapReview export (+ CRIC with --merge-base)
        from .data.inputs import classifier_data

        train, val, data_meta = classifier_data(
            args.data,
            patch=patch,
            merge_base=args.merge_base,
            data_dir=args.data_dir,
            split_seed=args.split_seed,
            rejected_label=negative,
        )
    else:
        dataset, split, seed = load_split(args.data_dir, args.split_seed)
        train = cric_patches(dataset, split["train"], patch, desc="train crops")
        val = cric_patches(dataset, split["val"], patch, desc="val crops")
        data_meta = split_meta(dataset, split, seed)
    from .train.negatives import read_mined

    for kind in ("negatives", "positives"):  # mine-negatives folders (and --positives)
        folders = getattr(args, kind, None) or []
        if not folders:
            continue
        parts = [read_mined(folder, patch, negative=negative) for folder in folders]
        train = CellPatches.joined([train, *parts])
        data_meta = {
            **data_meta,
            kind: [
                {"folder": str(f), "patches": len(p.labels)}
                for f, p in zip(folders, parts, strict=True)
            ],
        }
    options = {
        "samples_per_epoch": args.samples_per_epoch,
        "balance_power": args.balance_power,
        "loss_power": args.loss_power,
        "jitter_px": args.jitter_px,
    }
    result = train_classifier(
        train, val, config=config, init_from=init, **options, **_run_options(args)
    )
    seconds = time.monotonic() - started
    training = _training_meta(args, result, seconds, **options, **(start or {"init_from": None}))
    meta = classifier_checkpoint_meta(result, data_meta, training, train=train, val=val)
    if result.val_metrics:
        six = result.val_metrics["six_class"]
        plot_confusion_matrix(
            six["confusion_matrix"],
            six["classes"],
            args.out / "classifier_val_confusion.png",
            "classifier, validation crops",
        )
    return _save_run(
        args,
        "classifier",
        result,
        meta,
        seconds,
        temperature=result.temperature,
        abnormal_threshold=result.abnormal_threshold,
    )


# ------------------------------------------------------------------------------------------
# Inference commands
# ------------------------------------------------------------------------------------------


def _pipeline(args: argparse.Namespace, **kwargs: Any) -> Any:
    """The analyser of --detector / --classifier (committed defaults) with the run options."""
    from .interface import open_analyser

    kwargs.setdefault("cpu_bf16", _bf16(args))
    return open_analyser(
        getattr(args, "detector", None),
        getattr(args, "classifier", None),
        device=args.device,
        batch_size=getattr(args, "batch_size", 8),
        **kwargs,
    )


def model_splits(pipeline: Any) -> list[dict[str, list[str]]]:
    """The train/val/test image names each checkpoint of the pipeline recorded: its own split
    and, trained on an export with --merge-base, the base data's split too."""
    out = []
    for meta in (pipeline.detector_meta, pipeline.classifier_meta):
        data = meta.get("data", {})
        out.append(data.get("split", {}))
        if data.get("merged_with", {}).get("split"):
            out.append(data["merged_with"]["split"])
    return out


def mine_negatives_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .data.cric import AnnotatedImage, CellsTable
    from .data.fields import field_split, read_field_classes, read_field_labels
    from .evaluation import split_filter
    from .train.negatives import mine_negatives, mine_positives

    _setup(args)
    if (args.cells is None) == (args.fields is None):
        raise InputError("give --cells (annotated fields) or --fields (NILM fields), not both")
    if args.positives is not None and (args.fields is None or args.positives < 1):
        raise InputError("--positives N (1 or more) takes --fields: abnormal fields' calls")
    classes: dict[str, str] = {}
    if args.fields is not None:  # the train part: NILM fields, or abnormal ones (--positives)
        labels = read_field_labels(args.fields)
        if args.positives is not None:
            classes = read_field_classes(args.fields)
        train = [n for n in field_split(labels)["train"] if (args.images / n).is_file()]
        names = [n for n in train if (n in classes if args.positives else not labels[n])]
        table = CellsTable(args.images, {n: AnnotatedImage(n) for n in names})
    pipeline = _pipeline(args)
    if args.cells is not None:  # far from every marked cell, on the models' training fields
        table = CellsTable.read(args.images, args.cells)
        names, _ = split_filter(sorted(table.images), "train", model_splits(pipeline))
    if not names:
        raise InputError("no training fields to mine")
    originals = {n: table.image_path(n) for n in names}
    with contextlib.ExitStack() as stack:
        if args.upscale != 1.0:
            table = stack.enter_context(upscaled(table, names, args.upscale))
        if args.positives is not None:  # the most suspicious calls of abnormal train fields
            return mine_positives(
                pipeline,
                table,
                {n: classes[n] for n in names},
                args.out,
                patch=args.patch,
                per_field=args.positives,
                source_files=originals,
            )
        return mine_negatives(
            pipeline,
            table,
            names,
            args.out,
            patch=args.patch,
            far_px=args.far_px,
            max_per_field=args.max_per_field,
            source_files=originals,
        )


def ensemble_classifiers_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .ensemble import ensemble_classifiers

    _setup(args)
    return plain(ensemble_classifiers(args.members, args.out, data_dir=args.data_dir))


def calibrate_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .calibration import calibrate_pipeline, save_calibrated_classifier

    _setup(args)
    pipeline = _pipeline(args, use_fusion=False, tta_views=args.tta_views)
    calibration = calibrate_pipeline(
        pipeline, CricDataset.load(args.data_dir), radius=args.radius, far_budget=args.far_budget
    )
    out = args.out or args.classifier
    version = save_calibrated_classifier(
        args.classifier, calibration, tta_views=pipeline.operating_point["tta_views"], out=out
    )
    return plain(
        {
            **calibration.report,
            "fusion_used": calibration.used,
            "checkpoint": str(out),
            "version": version,
        }
    )


def _field_scales(paths: list[Path]) -> dict[str, Any]:
    """`inference.scale.estimate_scale` of each field image, by path."""
    from .scale import estimate_scale
    from .slides import read_image

    return {str(p): estimate_scale(read_image(p)) for p in paths}


def batch_scale(paths: list[Path]) -> Any:
    """`inference.scale.estimate_batch_scale` over these field images."""
    from .scale import estimate_batch_scale

    return estimate_batch_scale(list(_field_scales(paths).values()))


def estimate_scale_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .scale import estimate_batch_scale

    paths: list[Path] = []
    for p in args.images:
        paths += sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    if not paths:
        raise InputError("no images given")
    fields = _field_scales(paths)
    batch = estimate_batch_scale(list(fields.values()))
    return {
        "batch": batch.to_dict(),
        "fields": {name: e.to_dict() for name, e in fields.items()},
        "note": "factor: resize by it to reach the models' scale (--upscale); use the batch's",
    }


def predict_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image
    from tqdm import tqdm

    from .overlay import draw_overlay, thumbnail
    from .types import result_to_json

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

        result = pipeline.analyse(path, progress=progress)
        bar.close()
        stem = path.stem
        json_path = write_json(out / f"{stem}.json", result_to_json(path.name, result))
        img, scale = thumbnail(path)
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
        "model_versions": pipeline.versions,
        "device": pipeline.device_name,
        "outputs": written,
    }


def _field_labels(path: Path | None) -> dict[str, bool] | None:
    from .data.fields import read_field_labels

    return None if path is None else read_field_labels(path)


def _write_evaluation(out: Path, result: dict[str, Any], images: int) -> None:
    from .plots import plot_confusion_matrix, plot_reliability

    write_json(out, result)
    for view in ("six_class", "four_class"):
        rep = result["metrics"]["matched_cells"][view]
        plot_confusion_matrix(
            rep["confusion_matrix"],
            rep["classes"],
            out.with_name(f"{out.stem}_confusion_{view}.png"),
            f"matched cells, {view.replace('_', '-')} ({images} images)",
        )
    plot_reliability(result["reviewer"], out.with_name(f"{out.stem}_reviewer.png"))


@contextlib.contextmanager
def upscaled(table: Any, names: list[str], factor: float, *, grey: bool = False) -> Iterator[Any]:
    """The named images resized by `factor` (and their marked cells moved), and made monochrome
    with `grey` (luminance in all three channels, as a grey camera or an extended-depth-of-field
    composite gives them), in a temporary folder."""
    import tempfile

    import cv2
    from PIL import Image

    from .data.cric import AnnotatedImage, CellPoint, CellsTable
    from .scale import rescaled
    from .slides import read_image

    if not 0.1 <= factor <= 10:
        raise InputError(f"--upscale {factor} is outside 0.1-10")
    with tempfile.TemporaryDirectory(prefix="papreview-upscaled-") as tmp:
        images = {}
        for name in names:
            img = rescaled(read_image(table.image_path(name)), factor)
            if grey:
                img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
            out = Path(tmp) / name  # the same name: JPEG kept at quality 95
            Image.fromarray(img).save(out, quality=95)
            cells = [
                CellPoint(c.x * factor, c.y * factor, c.label) for c in table.images[name].cells
            ]
            images[name] = AnnotatedImage(name, cells)
        yield CellsTable(Path(tmp), images)


def evaluate_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .data.cric import AnnotatedImage, CellsTable
    from .data.export import opened
    from .evaluation import evaluate_export, evaluate_pipeline, split_filter

    _setup(args)
    pipeline = _pipeline(args)
    head = {"model_versions": pipeline.versions, "device": pipeline.device_name}
    if args.data is not None:
        if args.images is not None or args.cells is not None:
            raise InputError("give either --data or --images with --cells, not both")
        split = "test" if args.split == "auto" else args.split
        if split == "all":
            raise InputError("--data takes one split: train, val or test")
        with opened(args.data) as export:
            result = {**head, **evaluate_export(pipeline, export, split, radius=args.radius)}
    else:
        if args.images is None or (args.cells is None and args.fields is None):
            raise InputError("give --images with --cells and/or --fields (or --data EXPORT)")
        images_dir: Path = args.images
        if not images_dir.is_dir():
            raise InputError(f"--images {images_dir} is not a folder")
        field_labels = _field_labels(args.fields)
        if args.cells is not None:
            table = CellsTable.read(images_dir, args.cells)
        else:  # fields with a field label only: no marked cell, field-level figures
            assert field_labels is not None
            table = CellsTable(
                images_dir,
                {n: AnnotatedImage(n) for n in field_labels if (images_dir / n).is_file()},
            )
        if not table.images:
            raise InputError(
                f"none of the images named in {args.cells or args.fields} is in {images_dir}"
            )
        splits = model_splits(pipeline)
        if args.cells is None and args.split in ("train", "val", "test"):
            from .data.fields import field_split  # fields without marks: split by image

            assert field_labels is not None
            names = [n for n in field_split(field_labels)[args.split] if n in table.images]
            split_info = {
                "split": f"{args.split} (fields, by image)",
                "images_evaluated": len(names),
            }
        else:
            names, split_info = split_filter(sorted(table.images), args.split, splits)
        if not names:
            raise InputError(f"no images left to evaluate with --split {args.split}")
        with contextlib.ExitStack() as stack:
            if args.upscale == "auto":  # the batch's own nucleus sizes
                batch = batch_scale([table.image_path(n) for n in names])
                if batch.factor is None:
                    raise InputError("--upscale auto: too few round dark nuclei to find a scale")
                args.upscale = round(batch.factor, 3)
            if args.upscale != 1.0 or args.grey:  # x1.77 brings the LBC fields to CRIC's scale
                table = stack.enter_context(upscaled(table, names, args.upscale, grey=args.grey))
            result = {
                **head,
                "images_dir": str(images_dir),
                "cells_csv": str(args.cells) if args.cells else None,
                "upscale": args.upscale,
                "grey": args.grey,
                **split_info,
                **evaluate_pipeline(
                    pipeline, table, names, radius=args.radius, field_labels=field_labels
                ),
            }
    if args.out is not None:
        _write_evaluation(args.out, result, int(result["reviewer"]["fields"]))
    return plain(result)


def evaluate_classifier_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .evaluation import classify_crop_folder
    from .plots import plot_confusion_matrix

    _setup(args)
    result = classify_crop_folder(_pipeline(args), args.folder)
    if args.out is not None:
        write_json(args.out, result)
        rep = result["six_class"]
        plot_confusion_matrix(
            rep["confusion_matrix"],
            rep["classes"],
            args.out.with_name(f"{args.out.stem}_confusion.png"),
            "classifier on crops",
        )
    return plain(result)


def _bench_images(args: argparse.Namespace) -> tuple[list[np.ndarray], str]:
    from .bench import bench_images
    from .data import default_data_dir

    size = None
    if args.field_size:
        try:
            w, h = (int(v) for v in args.field_size.lower().split("x"))
            size = (w, h)
        except ValueError as exc:
            raise InputError("--field-size must look like 2048x1536") from exc
    folder = args.images or (default_data_dir() / "cric" / "images")
    return bench_images(folder, limit=args.limit, size=size, required=args.images is not None)


def bench_cmd(args: argparse.Namespace) -> dict[str, Any]:
    from .bench import bench_fields, bench_wsi
    from .metrics import TARGETS

    _setup(args)
    images, source = _bench_images(args)
    pipeline = _pipeline(args)
    result: dict[str, Any] = {"images": source, "model_versions": pipeline.versions}
    result.update(bench_fields(pipeline, images, reference_limit=args.reference_limit))
    result["targets"] = {
        "speed": {
            "target": TARGETS["speed"],
            "measured_speedup": result["speedup"],
            "met": result["speedup"] >= 40 if pipeline.device_name == "cpu" else None,
        }
    }
    if pipeline.device_name.startswith("cuda"):
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
            "met": wsi["peak_rss_mib"] < 2048 if pipeline.device_name == "cpu" else None,
        }
    if args.out is not None:
        write_json(args.out, result)
    return plain(result)
