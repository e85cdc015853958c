"""How large a cell's box may be: a sane physical size, whatever the slide's resolution.

The largest squamous cells are about 60 µm across and a cluster a reviewer boxes as one object
rarely exceeds 150 µm; a box may be at most CELL_MAX_MICRONS on a side. Slides that do not say
their microns per pixel are taken at ASSUMED_MPP (a 40x scan), so the cap is 800 px there.
"""

from __future__ import annotations

CELL_MAX_MICRONS = 200.0
ASSUMED_MPP = 0.25


def cell_box_max_px(mpp: float | None) -> int:
    """The longest side, in level-0 pixels, a cell's box may have on a slide of `mpp`."""
    return max(64, round(CELL_MAX_MICRONS / (mpp if mpp and mpp > 0 else ASSUMED_MPP)))
