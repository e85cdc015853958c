"""Storage backends for the tests."""

from __future__ import annotations

import os

from django.core.files.storage import InMemoryStorage


class NoLocalPathStorage(InMemoryStorage):
    """In memory and without local paths, as object storage is (`path` is not implemented)."""

    def path(self, name: str) -> str:
        raise NotImplementedError("This backend doesn't support absolute paths.")

    def _relative_path(self, name: str) -> str:  # InMemoryStorage's own use of paths
        return os.path.relpath(InMemoryStorage.path(self, name), self.location)
