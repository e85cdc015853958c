"""The registry's tests use the dataset tests' fixtures (signed-out slides, exports, versions)."""

from tests.datasets.conftest import *  # noqa: F403
