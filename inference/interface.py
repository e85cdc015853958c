"""The one interface between the models and everything that runs them: the analysis worker
(`papreview.analysis.adapter`), the registry's evaluation and retraining's calibration
(`papreview.registry`), and the CLI (`inference.commands`). Modelled on cvat-sdk's detection
function protocol: a loaded object that says which versions it is and answers two questions.

    analyser = open_analyser(detector_path, classifier_path, device="auto")
    analyser.versions                            # {"detector": "...", "classifier": "..."}
    result = analyser.analyse(path, progress=cb)  # SlideResult: cells found and classified
    calls = analyser.classify_crops(crops)       # CropCalls: stage 2 alone, same decision rule

Everything production decides (tiling and scale, test-time views, temperature, the late fusion
of both stages, the thresholds) lives behind it, so what a caller measures is what the workers
run. `papreview` may not import the model modules behind it (an import-linter contract).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import InputError
from .types import CropCalls, ProgressCallback, SlideResult

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CellAnalyser", "CropCalls", "default_weights", "open_analyser"]


@runtime_checkable
class CellAnalyser(Protocol):
    """Two stages loaded once, run on many slides (implemented by `inference.pipeline.Pipeline`)."""

    @property
    def versions(self) -> dict[str, str]:
        """The version string of each stage: {"detector": ..., "classifier": ...}."""
        ...

    @property
    def operating_point(self) -> dict[str, Any]:
        """The decisions in force: thresholds, temperature, test-time views, fusion used."""
        ...

    @property
    def device_name(self) -> str:
        """Where the models run ("cpu", "cuda:0")."""
        ...

    @property
    def crop_px(self) -> int:
        """The side of the crops `classify_crops` takes."""
        ...

    def analyse(self, path: Path, *, progress: ProgressCallback | None = None) -> SlideResult: ...

    def classify_crops(
        self, crops: np.ndarray, detection_scores: np.ndarray | None = None
    ) -> CropCalls: ...


def default_weights() -> tuple[Path, Path]:
    """The committed default checkpoints (detector, classifier)."""
    from .pipeline import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR

    return DEFAULT_DETECTOR, DEFAULT_CLASSIFIER


BF16_CHOICES = ("auto", "on", "off")


def resolve_cpu_bf16(choice: bool | str) -> bool:
    """Whether to run the models under bfloat16 autocast on the CPU: "on", "off", or "auto"
    (on where the CPU has AVX512-BF16 or AMX: stage 1 about 3x faster there, the same calls on
    the CRIC validation fields, see MODEL_CARD.md)."""
    if isinstance(choice, bool):
        return choice
    if choice not in BF16_CHOICES:
        raise InputError(f"bfloat16 choice {choice!r}: expected one of {', '.join(BF16_CHOICES)}")
    from .train.engine import cpu_supports_bf16

    return choice == "on" or (choice == "auto" and cpu_supports_bf16())


def open_analyser(
    detector: Path | None = None,
    classifier: Path | None = None,
    *,
    device: str = "auto",
    cpu_bf16: bool | str = "auto",
    **options: Any,
) -> CellAnalyser:
    """Load both checkpoints (the committed defaults for those not given) on `device`.

    `cpu_bf16` (`resolve_cpu_bf16`): every caller (workers, registry, retraining, the CLI) gets
    the same default, so what is evaluated is what the workers run. `options` are the pipeline's
    run options (batch_size, tile_size, max_pixels, prefetch, use_fusion, tta_views...). A
    missing, corrupt or wrong-stage checkpoint raises `inference.errors.CheckpointError`.
    """
    from .pipeline import Pipeline  # torch loads here, not when the interface is imported

    default_det, default_cls = default_weights()
    return Pipeline.from_checkpoints(
        Path(detector or default_det),
        Path(classifier or default_cls),
        device=device,
        cpu_bf16=resolve_cpu_bf16(cpu_bf16),
        **options,
    )
