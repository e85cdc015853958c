"""A size-bounded local disk cache of files kept in remote (object) storage, shared by the
processes of one host.

Layout of MEDIA_CACHE_DIR: one file per entry, named by a digest of (storage name, version) with
the original suffix (readers pick a format by it), and beside a slide zip the folder it unpacks to
(counted and evicted with it); `.lock` serialises bookkeeping between
processes (flock); `.stats.json` counts hits, misses and evictions since the cache was created.

* A reader *holds* an entry: a shared flock on the entry's file for as long as it reads it.
* Least recently used out: an entry's mtime is its last use; when the cache would pass
  MEDIA_CACHE_MAX_BYTES, the oldest entries that nobody holds are deleted (an exclusive,
  non-blocking flock proves nobody does). Entries being read are never deleted, so the cache can
  stand above its limit while more than the limit is in use, and comes back under it after.
* A miss downloads to a temporary file in the cache folder and renames it into place: a reader
  never sees half a file. Two processes missing the same entry at once both download; the second
  rename replaces the first with the same bytes (readers of the first keep their open inode).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import Storage

from inference.archive import UNPACKED_SUFFIX

_CHUNK = 8 * 1024 * 1024
_STATS = ".stats.json"
_LOCK = ".lock"
_TMP = ".part-"


class MediaCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._thread_lock = threading.Lock()

    # -- bookkeeping under the host-wide lock ----------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, (self.directory / _LOCK).open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _count(self, **delta: int) -> None:
        """Add to the counters (call under `_locked`)."""
        path = self.directory / _STATS
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            counts = {}
        for key, value in delta.items():
            counts[key] = int(counts.get(key, 0)) + value
        tmp = path.with_name(f"{_STATS}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(counts))
        tmp.replace(path)

    def _entries(self) -> list[os.DirEntry[str]]:
        with os.scandir(self.directory) as it:
            return [e for e in it if e.is_file() and not e.name.startswith(".")]

    def _evict(self, *, room_for: int = 0, keep: Path | None = None) -> int:
        """Delete least recently used entries nobody holds until `room_for` more bytes fit
        (call under `_locked`). Returns how many were deleted."""
        entries = sorted(self._entries(), key=lambda e: e.stat().st_mtime)
        sizes = {e.path: _entry_bytes(e) for e in entries}
        used = sum(sizes.values())
        evicted = 0
        for entry in entries:
            if used + room_for <= self.max_bytes:
                break
            if keep is not None and entry.path == str(keep):
                continue
            try:
                fh = Path(entry.path).open("rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                continue
            with fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # someone is reading it
                Path(entry.path).unlink(missing_ok=True)
                shutil.rmtree(entry.path + UNPACKED_SUFFIX, ignore_errors=True)
                used -= sizes[entry.path]
                evicted += 1
        if evicted:
            self._count(evictions=evicted)
        return evicted

    # -- reading -------------------------------------------------------------------------------

    def entry_path(self, name: str, version: str = "") -> Path:
        key = hashlib.sha256(f"{name}\0{version}".encode()).hexdigest()[:40]
        return self.directory / f"{key}{Path(name).suffix.lower()}"

    def _open_held(self, path: Path) -> Any | None:
        """The entry opened with a shared lock, or None when it is absent (or was just evicted)."""
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            return None
        fcntl.flock(fh, fcntl.LOCK_SH)
        try:
            same = os.fstat(fh.fileno()).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if not same:  # evicted or replaced between open and lock
            fh.close()
            return None
        return fh

    def _fetch(self, name: str, path: Path, storage: Storage) -> None:
        from papreview.core.storage import StoredFileMissingError

        if not storage.exists(name):
            raise StoredFileMissingError(name)
        with self._locked():
            self._evict(room_for=storage.size(name))
        tmp = self.directory / f"{_TMP}{uuid.uuid4().hex}"
        try:
            with storage.open(name, "rb") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def hold(self, name: str, *, version: str, storage: Storage) -> Iterator[Path]:
        """A local copy of the stored file, fetched on a miss, held (not evictable) meanwhile."""
        path = self.entry_path(name, version)
        self.directory.mkdir(parents=True, exist_ok=True)
        fh = self._open_held(path)
        hit = fh is not None
        while fh is None:
            self._fetch(name, path, storage)
            fh = self._open_held(path)
        try:
            os.utime(path)  # last used: now
            with self._locked():
                self._count(**({"hits": 1} if hit else {"misses": 1}))
                if not hit:
                    self._evict(keep=path)
            yield path
        finally:
            fh.close()

    def stats(self) -> dict[str, Any]:
        try:
            counts = json.loads((self.directory / _STATS).read_text())
        except (OSError, ValueError):
            counts = {}
        entries = self._entries() if self.directory.is_dir() else []
        hits, misses = int(counts.get("hits", 0)), int(counts.get("misses", 0))
        return {
            "dir": str(self.directory),
            "max_bytes": self.max_bytes,
            "used_bytes": sum(_entry_bytes(e) for e in entries),
            "files": len(entries),
            "hits": hits,
            "misses": misses,
            "evictions": int(counts.get("evictions", 0)),
            "hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
        }

    def clear_stale_parts(self, older_than_s: float = 3600.0) -> None:
        """Delete downloads and unpacked zips (hidden folders) a killed process left half done."""
        now = time.time()
        for entry in os.scandir(self.directory):
            if now - entry.stat().st_mtime <= older_than_s:
                continue
            if entry.name.startswith(_TMP):
                Path(entry.path).unlink(missing_ok=True)
            elif entry.name.startswith(".") and entry.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)


def _entry_bytes(entry: os.DirEntry[str]) -> int:
    """An entry's size on disk, with the folder a slide zip unpacked beside it (`inference.
    archive`): evicted with it, so counted with it."""
    size = entry.stat().st_size
    unpacked = Path(entry.path + UNPACKED_SUFFIX)
    if unpacked.is_dir():
        # (recursive: a MIRAX slide's data lie in a folder inside)
        size += sum(f.stat().st_size for f in unpacked.rglob("*") if f.is_file())
    return size


_caches: dict[tuple[str, int], MediaCache] = {}


def media_cache() -> MediaCache:
    """The cache of this host's settings (one object per directory and limit)."""
    key = (str(settings.MEDIA_CACHE_DIR), int(settings.MEDIA_CACHE_MAX_BYTES))
    cache = _caches.get(key)
    if cache is None:
        cache = _caches.setdefault(key, MediaCache(Path(key[0]), key[1]))
        if cache.directory.is_dir():
            cache.clear_stale_parts()
    return cache
