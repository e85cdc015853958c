"""Stage 2 ensembles (issue 17, item 6): classifiers trained apart, made one checkpoint.

`ensemble_classifiers(paths, out)` checks that the members can be averaged (one architecture,
input and class list; trained on the same CRIC split, so that no member has trained on another's
validation images), loads them into one `ClassifierEnsemble` (their logits averaged), fits its
temperature and P(abnormal) threshold on the CRIC validation crops as training does
(`calibration.calibrate_classifier`), and writes it. `python -m inference calibrate` then fits the
pipeline's test-time views, fusion and decision rule for it as for any classifier.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .calibration import calibrate_classifier
from .checkpoints import load_checkpoint, load_weights, save_checkpoint
from .classifier import ClassifierConfig, ClassifierEnsemble, stage2_classes
from .data.cric import CricDataset
from .errors import InputError
from .train.classifier import classifier_logits
from .train.samples import centre_crops, cric_patches

# What a member's metadata says about one calibration of it; the ensemble gets its own.
_PER_MODEL_KEYS = ("version", "base_version", "tta_views", "fusion", "fusion_skipped", "created_at")


def ensemble_classifiers(
    paths: list[Path], out: Path, *, data_dir: Path | None = None
) -> dict[str, Any]:
    """Write the ensemble of the classifier checkpoints `paths` to `out`; what was done."""
    if len(paths) < 2:
        raise InputError("an ensemble needs at least two classifier checkpoints")
    ckpts = [load_checkpoint(Path(p), stage="classifier") for p in paths]
    configs = [ClassifierConfig.from_dict(c.meta["config"]) for c in ckpts]
    for ckpt, config in zip(ckpts, configs, strict=True):
        if config.members != 1:
            raise InputError(f"{ckpt.path}: is an ensemble already; give its members instead")
        if config != configs[0]:
            raise InputError(
                f"{ckpt.path}: another architecture or input than {ckpts[0].path} "
                "(crop, widths, normalisation): its logits cannot be averaged with the others"
            )
    data = ckpts[0].meta.get("data", {})
    for ckpt in ckpts[1:]:
        if ckpt.meta.get("data", {}).get("split") != data.get("split"):
            raise InputError(
                f"{ckpt.path}: trained on another split than {ckpts[0].path}: one member's "
                "validation images would be another's training images"
            )
    dataset = CricDataset.load(data_dir)
    val_names = list((data.get("split") or {}).get("val", []))
    if not val_names or any(name not in dataset.images for name in val_names):
        raise InputError(
            "the members' validation images are not all in the CRIC data (trained on an "
            "export?): the ensemble cannot be calibrated on them"
        )
    config = replace(configs[0], members=len(ckpts))
    model = ClassifierEnsemble(config, num_classes=len(stage2_classes(config)))
    for member, ckpt in zip(model.members, ckpts, strict=True):
        load_weights(member, ckpt)
    val = cric_patches(dataset, val_names, config.crop_px, desc="val crops")
    logits = classifier_logits(model, centre_crops(val.images, config.crop_px), config)
    temperature, threshold, metrics = calibrate_classifier(logits, val.labels)
    meta = {k: v for k, v in ckpts[0].meta.items() if k not in _PER_MODEL_KEYS}
    meta.update(
        arch="ClassifierEnsemble",
        config=config.to_dict(),
        temperature=temperature,
        abnormal_threshold=threshold,
        calibration={
            "split": "val",
            "cells": len(val.labels),
            "temperature": temperature,
            "abnormal_threshold": threshold,
            **metrics["calibration"],
        },
        metrics={"val": metrics},
        ensemble_of=[{"version": c.version, "path": str(c.path)} for c in ckpts],
    )
    version = save_checkpoint(out, stage="classifier", model=model, meta=meta)
    return {
        "version": version,
        "checkpoint": str(out),
        "members": [c.version for c in ckpts],
        "temperature": temperature,
        "abnormal_threshold": threshold,
        "val_auc_abnormal_vs_nilm": metrics["abnormal_vs_nilm"].get("auc"),
    }
