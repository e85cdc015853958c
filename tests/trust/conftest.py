"""Fixtures of the trust suite: the analysis tests' tiny random-weight checkpoints (for the real
Celery workers of the fault tests)."""

from tests.analysis.conftest import tiny_weights

__all__ = ["tiny_weights"]
