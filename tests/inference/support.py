"""Helpers shared by the inference tests (data location, skip markers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _data_dir() -> Path:
    env = os.environ.get("PAPREVIEW_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


CRIC_DIR = _data_dir() / "cric"
HAS_CRIC = (CRIC_DIR / "cells.csv").is_file() and (CRIC_DIR / "images").is_dir()
needs_cric = pytest.mark.skipif(
    not HAS_CRIC, reason=f"CRIC data not found at {CRIC_DIR} (set PAPREVIEW_DATA_DIR)"
)
