"""Django choices built from the one place class codes live: `inference.types`."""

from inference.types import BETHESDA_CLASSES, SEVERITY, SlideKind

BETHESDA_CHOICES: list[tuple[str, str]] = [(code, code) for code in BETHESDA_CLASSES]
SLIDE_KIND_CHOICES: list[tuple[str, str]] = [
    (SlideKind.FIELD.value, "Field image"),
    (SlideKind.WHOLE_SLIDE.value, "Whole-slide image"),
]

__all__ = ("BETHESDA_CHOICES", "BETHESDA_CLASSES", "SEVERITY", "SLIDE_KIND_CHOICES")
