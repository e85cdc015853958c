"""No leak, ever: every training image is identified by the SHA-256 of its pixels file.

A CRIC base image is the SHA-256 of its file; an export image the SHA-256 of the file its slide
was uploaded as (a field image: that very file; a tile of a whole-slide image: the slide's file,
the tile's origin telling where). The leak key is that file's SHA-256, so every tile of one
slide counts as the same source, and so does the same field uploaded twice under two names.

`refuse_leaks` stops a training run whose validation or test split holds an image that is also a
training image (by SHA-256, whatever the source: export, CRIC base, or both);
`sha256_record` is what a checkpoint records of its training and validation images;
`trained_on_warnings` is what an evaluation says when the model was trained (or selected) on
images of the split it is scored on. No torch, no Django.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

HELD_OUT: tuple[str, ...] = ("val", "test")
RECORDED: tuple[str, ...] = ("train", "val")
_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageRef:
    """One training image: the SHA-256 of its source file, and a name to show people."""

    sha256: str
    name: str


Sources = Mapping[str, Sequence[ImageRef]]  # split ("train", "val", "test") -> its images


class LeakError(InputError):
    """A validation or test image is also a training image."""


def leaked(sources: Sources) -> list[tuple[str, ImageRef, ImageRef]]:
    """(split, held-out image, the training image with the same SHA-256) for every image of
    the validation and test splits that is also in the training split."""
    train: dict[str, ImageRef] = {}
    for ref in sources.get("train", ()):
        if ref.sha256:
            train.setdefault(ref.sha256, ref)
    return [
        (split, ref, train[ref.sha256])
        for split in HELD_OUT
        for ref in sources.get(split, ())
        if ref.sha256 in train
    ]


def refuse_leaks(sources: Sources) -> None:
    """Raise `LeakError` (one line: how many, and the first) when any validation or test image
    is also a training image."""
    found = leaked(sources)
    if not found:
        return
    split, ref, twin = found[0]
    n = len(found)
    raise LeakError(
        f"refusing to train: {n} validation/test image{'s' if n != 1 else ''} "
        f"{'are' if n != 1 else 'is'} also in the training data (same SHA-256); first: "
        f"{ref.name} ({split}) = {twin.name} (train), sha256 {ref.sha256[:12]}"
    )


def sha256_record(sources: Sources, splits: Sequence[str] = RECORDED) -> dict[str, list[str]]:
    """The sorted, distinct SHA-256s of each split's images (what a checkpoint records)."""
    return {s: sorted({r.sha256 for r in sources.get(s, ()) if r.sha256}) for s in splits}


def record_of(meta: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """The training/validation SHA-256s a checkpoint's metadata records, or None (an older
    checkpoint, or one trained on in-memory samples)."""
    data = meta.get("data")
    record = data.get("images_sha256") if isinstance(data, Mapping) else None
    if not isinstance(record, Mapping) or not isinstance(record.get("train"), list):
        return None
    return {s: [str(h) for h in record.get(s) or []] for s in RECORDED}


def trained_on_warnings(
    record: Mapping[str, Sequence[str]] | None, refs: Sequence[ImageRef], split: str
) -> list[str]:
    """What to say when a model is scored on images it was trained (or selected) on."""
    if record is None:
        return [
            "The training images of this version are not recorded (an older checkpoint): "
            f"overlap with the {split} images was not checked."
        ]
    out = []
    for part, how in (("train", "trained"), ("val", "selected and calibrated")):
        seen = set(record.get(part) or ())
        n = sum(1 for r in refs if r.sha256 in seen)
        if n:
            out.append(
                f"This version was {how} on {n} of the {len(refs)} {split} images "
                f"(same SHA-256): its scores here are optimistic."
            )
    return out
