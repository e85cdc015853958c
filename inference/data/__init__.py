"""Dataset readers: the CRIC Cervix fields in ../shared/data and synthetic data for tests.

No torch at import time.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """`PAPREVIEW_DATA_DIR` when set, else ../shared/data next to the repository root."""
    env = os.environ.get("PAPREVIEW_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
