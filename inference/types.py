"""Plain values shared by the pipeline and the web side, and the JSON form of a result.
No Django, no torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


class Bethesda(StrEnum):
    """Bethesda cell categories, in increasing order of severity."""

    NILM = "NILM"
    ASC_US = "ASC-US"
    LSIL = "LSIL"
    ASC_H = "ASC-H"
    HSIL = "HSIL"
    SCC = "SCC"


# The single source of truth for class codes, their order and severity (index = severity rank).
BETHESDA_CLASSES: tuple[str, ...] = tuple(c.value for c in Bethesda)
SEVERITY: dict[str, int] = {code: rank for rank, code in enumerate(BETHESDA_CLASSES)}


def suspicion(code: str, confidence: float) -> float:
    """How suspicious a call is: its class's severity rank times its confidence (clamped to
    0..1). Ranks cells in the gallery and the flagged list, and slides in the review queue: a
    confident LSIL (2 x 0.8 = 1.6) outranks an SCC call the model gave 12 % (5 x 0.12 = 0.6)."""
    return SEVERITY[code] * min(max(confidence, 0.0), 1.0)


# The published method's 4-class view: ASC-US joins LSIL (low grade), ASC-H joins HSIL (high grade).
FOUR_CLASSES: tuple[str, ...] = ("NILM", "LSIL", "HSIL", "SCC")
TO_FOUR_CLASS: dict[str, str] = {
    "NILM": "NILM",
    "ASC-US": "LSIL",
    "LSIL": "LSIL",
    "ASC-H": "HSIL",
    "HSIL": "HSIL",
    "SCC": "SCC",
}

# Display colours (hex) per class, shared by overlays, the viewer and QuPath exports. Okabe-Ito
# colours (told apart with the common colour-vision deficiencies) picked against Pap stain: no
# pink, purple or dark blue, which hide on pink/orange cytoplasm and blue-purple nuclei. The
# high-grade classes differ most: ASC-H sky blue, HSIL vermillion, SCC black (drawn with a white
# casing in the viewer). Colour is never the only cue: the viewer also varies line and corners.
CLASS_COLOURS: dict[str, str] = {
    "NILM": "#009e73",  # bluish green
    "ASC-US": "#f0e442",  # yellow
    "LSIL": "#e69f00",  # orange
    "ASC-H": "#56b4e9",  # sky blue
    "HSIL": "#d55e00",  # vermillion
    "SCC": "#000000",  # black
}


# Stage 2's seventh outcome (checkpoints with `not_a_cell`): a candidate that is no cell
# (leukocyte clusters, debris, mucus) or nothing a reviewer needs to see. Taught with the hard
# negatives (the previous models' false alarms, which also hold unremarkable normal cells of NILM
# fields) and the calls reviewers rejected. Never a Bethesda class: set aside, not reported.
NOT_A_CELL = "not-a-cell"
# Every class stage 2 can be trained on (indices of training labels), NOT_A_CELL last.
STAGE2_CLASSES: tuple[str, ...] = (*BETHESDA_CLASSES, NOT_A_CELL)


def is_abnormal(code: str) -> bool:
    return SEVERITY[code] > SEVERITY["NILM"]


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in level-0 slide pixels, origin top-left."""

    x: int
    y: int
    width: int
    height: int

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x + self.width / 2, self.y + self.height / 2)


@dataclass(frozen=True)
class CellPrediction:
    box: Box
    label: str  # a Bethesda code
    probabilities: dict[str, float]  # Bethesda code -> calibrated probability, sums to 1
    detection_score: float  # stage 1 abnormality score in [0, 1]
    plane: int = 0  # the focal plane its crop was read from (the sharpest, in Z stacks)


class SlideKind(StrEnum):
    FIELD = "field"  # a single field image (JPEG/PNG/TIFF/BMP)
    WHOLE_SLIDE = "wsi"  # a multi-resolution whole-slide image read through OpenSlide


@dataclass(frozen=True)
class SlideInfo:
    """What a slide is, read from its bytes without decoding all its pixels."""

    format: (
        str  # "jpeg", "png", "tiff", "bmp", or the OpenSlide vendor ("aperio", "generic-tiff", ...)
    )
    kind: SlideKind
    width: int
    height: int
    mpp: float | None = None  # microns per level-0 pixel, when the file says
    level_count: int = 1
    planes: int = 1  # focal planes (Z) of a stack


# progress(done, total): called as work advances, e.g. tiles done out of tiles in the slide.
ProgressCallback = Callable[[int, int], None]


@dataclass
class SlideResult:
    info: SlideInfo
    cells: list[CellPrediction]
    model_versions: dict[str, str]  # stage ("detector", "classifier") -> version string
    device: str
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    # Candidates stage 2 judged not a cell (never called abnormal): not shown to reviewers, kept
    # for evaluation (as NILM calls, so that setting a cell aside never flatters a figure).
    set_aside: list[CellPrediction] = field(default_factory=list)

    @property
    def candidates(self) -> list[CellPrediction]:
        """Every candidate stage 2 decided: the cells, then those set aside (labelled NILM)."""
        return [*self.cells, *self.set_aside]


@dataclass(frozen=True)
class CropCalls:
    """Stage 2's decision on a batch of crops (`CellAnalyser.classify_crops`)."""

    probabilities: np.ndarray  # (N, 6) calibrated, in BETHESDA_CLASSES order (fused if `fused`)
    labels: list[str]  # the decided class of each crop
    fused: bool  # stage 1's score took part (the late fusion fitted for this detector)
    # (N,) True where the crop is not a cell (`NOT_A_CELL`; its label is NILM): None when the
    # classifier has no such outcome
    not_cell: np.ndarray | None = None


def cell_to_json(cell: CellPrediction) -> dict[str, Any]:
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


def result_to_json(name: str, result: SlideResult) -> dict[str, Any]:
    """A slide's result as the `predict` command writes it (image name, slide, cells)."""
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
