"""Every reader of stored media (slides, exports, model weights) goes through here.

`storage_local_file(name, version=...)` yields a local path to the stored file:

* media on the local disk (FileSystemStorage, or a network file system mounted as MEDIA_ROOT)
  is used in place;
* media in object storage (S3 and anything else without a local path) is fetched once into the
  media cache on this host (`papreview.core.mediacache`, bounded by MEDIA_CACHE_MAX_BYTES, least
  recently used out) and read from there; the entry is pinned while the `with` block runs.

`version` names the content (the sha256 we recorded): a file saved again under the same name with
other bytes is a new cache entry. A name that storage does not have raises `StoredFileMissingError`;
callers turn it into their own error (a failed run, a 404).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.files.storage import Storage, default_storage, storages

from papreview.core import mediacache


class StoredFileMissingError(FileNotFoundError):
    """Storage has no file under this name."""


def local_path_of(name: str, *, storage: Storage | None = None) -> Path | None:
    """The file's path on local disk, or None where the storage has none (object storage)."""
    storage = storage or default_storage
    try:
        return Path(storage.path(name))
    except NotImplementedError:
        return None


def storage_is_local(storage: Storage | None = None) -> bool:
    return local_path_of("probe", storage=storage) is not None


@contextlib.contextmanager
def storage_local_file(
    name: str, *, version: str = "", storage: Storage | None = None
) -> Iterator[Path]:
    """The stored file `name` as a local path for the duration of the block (see module doc)."""
    storage = storage or default_storage
    if not name:
        raise StoredFileMissingError("no file name")
    local = local_path_of(name, storage=storage)
    if local is not None:
        if not local.is_file():
            raise StoredFileMissingError(name)
        yield local
        return
    with mediacache.media_cache().hold(name, version=version, storage=storage) as cached:
        yield cached


def storage_local_path(name: str, *, version: str = "", storage: Storage | None = None) -> Path:
    """As `storage_local_file`, for a small file read at once (model weights): the path is not
    held after the call, so a cached copy stays until it is the least recently used one."""
    with storage_local_file(name, version=version, storage=storage) as path:
        return path


def storage_status() -> dict[str, Any]:
    """What the health page shows staff: the storage backend and the media cache's figures."""
    backend = type(storages["default"])
    local = storage_is_local()
    report: dict[str, Any] = {"backend": f"{backend.__module__}.{backend.__name__}", "local": local}
    if not local:
        report["media_cache"] = mediacache.media_cache().stats()
    return report
