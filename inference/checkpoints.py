"""Checkpoints: model weights plus the metadata needed to use and audit them.

A checkpoint is a `torch.save`d dict of plain types (loadable with `weights_only=True`):

    {"format": "papreview-checkpoint", "format_version": 1, "stage": "detector"|"classifier",
     "state_dict": {...}, "meta": {...}}

`meta` holds: version, created_at, arch config (input scale / crop size, widths, ...),
classes, normalisation (mean, std), data (name, hash, split, split seed), metrics (val, and test
when evaluated), temperature and decision thresholds. Loading validates all of it and raises
`CheckpointError` with a one-line reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .types import BETHESDA_CLASSES, NOT_A_CELL

FORMAT = "papreview-checkpoint"
FORMAT_VERSION = 1
STAGES = ("detector", "classifier")


@dataclass
class Checkpoint:
    stage: str
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unknown"))


def plain(obj: Any) -> Any:
    """Numpy scalars/arrays, tuples, paths and str subclasses (e.g. torch.__version__) -> plain
    Python values, so metadata loads with `weights_only=True` and serialises to JSON."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path | str):
        return str(obj)
    if isinstance(obj, bool | int | float) or obj is None:
        return obj
    raise TypeError(f"metadata value of type {type(obj).__name__} cannot be stored")


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:8]


def make_version(stage: str, state_dict: dict[str, torch.Tensor], created_at: datetime) -> str:
    return f"{stage}-{created_at:%Y%m%d}-{weights_digest(state_dict)}"


def save_checkpoint(path: Path, *, stage: str, model: nn.Module, meta: dict[str, Any]) -> str:
    """Write a checkpoint atomically; returns its version string (also stored in meta)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    created = datetime.now(UTC)
    meta = plain(dict(meta))
    meta.setdefault("created_at", created.isoformat(timespec="seconds"))
    meta["version"] = meta.get("version") or make_version(stage, state, created)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "state_dict": state,
        "meta": meta,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return str(meta["version"])


def load_checkpoint(
    path: Path,
    *,
    stage: str,
    classes: tuple[str, ...] | None = BETHESDA_CLASSES,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Read and validate a checkpoint of the given stage.

    Raises CheckpointError when the file is missing, corrupt or truncated, not a PapReview
    checkpoint, of another stage or format version, or (classifier) trained on other classes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any failure to unpickle means an unusable file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path.name}: not a readable checkpoint (corrupt or truncated file: {first[:120]})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: not a PapReview checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name}: checkpoint format version {payload.get('format_version')!r} is not "
            f"supported (expected {FORMAT_VERSION})"
        )
    found = payload.get("stage")
    if found != stage:
        raise CheckpointError(
            f"{path.name}: is a {found} checkpoint, expected a {stage} checkpoint"
        )
    meta = payload.get("meta")
    state = payload.get("state_dict")
    if not isinstance(meta, dict) or not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path.name}: checkpoint has no weights or no metadata")
    if classes is not None and stage == "classifier":
        have = tuple(meta.get("classes", ()))
        if have not in (tuple(classes), (*classes, NOT_A_CELL)):  # + the not-a-cell outcome
            raise CheckpointError(
                f"{path.name}: classifier classes {list(have)} do not match the expected "
                f"{list(classes)}"
            )
    return Checkpoint(stage=stage, state_dict=state, meta=meta, path=path)


def load_weights(model: nn.Module, ckpt: Checkpoint) -> nn.Module:
    """Load a checkpoint's weights, turning shape/key mismatches into CheckpointError."""
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        name = ckpt.path.name if ckpt.path else "checkpoint"
        raise CheckpointError(
            f"{name}: weights do not fit the {ckpt.stage} architecture in its metadata ({first})"
        ) from exc
    return model
