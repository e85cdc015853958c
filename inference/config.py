"""Architecture configs stored in checkpoints as plain JSON-like dicts."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Self


class DictConfig:
    """For frozen dataclasses of numbers and tuples: `to_dict` gives lists for tuples (what a
    checkpoint's metadata holds); `from_dict` takes them back, ignoring unknown keys so that
    older code can read a newer checkpoint's config."""

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names
        }
        return cls(**kwargs)
