"""The storage-aware reader and the per-host media cache, over a storage with no local path
(an in-memory one stands for object storage here; tests/storage/test_s3.py uses a real S3
server)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from papreview.core.mediacache import MediaCache, media_cache
from papreview.core.storage import (
    StoredFileMissingError,
    local_path_of,
    storage_local_file,
    storage_status,
)
from testkit.storages import NoLocalPathStorage


@pytest.fixture
def remote() -> NoLocalPathStorage:
    return NoLocalPathStorage()


@pytest.fixture
def cache_dir(settings, tmp_path: Path) -> Path:
    settings.MEDIA_CACHE_DIR = tmp_path / "cache"
    settings.MEDIA_CACHE_MAX_BYTES = 250
    return tmp_path / "cache"


def _put(storage: NoLocalPathStorage, name: str, size: int = 100, byte: bytes = b"x") -> str:
    return storage.save(name, ContentFile(byte * size))


def test_local_storage_is_read_in_place(tmp_path: Path) -> None:
    fs = FileSystemStorage(location=tmp_path)
    name = fs.save("slides/a.png", ContentFile(b"png"))
    with storage_local_file(name, storage=fs) as path:
        assert path == tmp_path / "slides" / "a.png"
    assert local_path_of(name, storage=fs) == path
    with pytest.raises(StoredFileMissingError), storage_local_file("nope.png", storage=fs):
        pass


def test_remote_file_is_fetched_once_then_hit(remote, cache_dir) -> None:
    name = _put(remote, "slides/a.svs")
    with storage_local_file(name, version="v1", storage=remote) as path:
        assert path.parent == cache_dir and path.suffix == ".svs"
        assert path.read_bytes() == b"x" * 100
    with storage_local_file(name, version="v1", storage=remote) as again:
        assert again == path
    stats = media_cache().stats()
    assert (stats["hits"], stats["misses"], stats["files"]) == (1, 1, 1)
    assert stats["hit_rate"] == 0.5 and stats["used_bytes"] == 100
    # Other bytes under the same name (an export built again): a new entry, never the old one.
    with storage_local_file(name, version="v2", storage=remote) as other:
        assert other != path
    with pytest.raises(StoredFileMissingError), storage_local_file("x.png", storage=remote):
        pass


def test_least_recently_used_entries_go_beyond_the_limit(remote, cache_dir) -> None:
    names = [_put(remote, f"s/{n}.png") for n in "abc"]
    cache = media_cache()
    for i, name in enumerate(names[:2]):
        with storage_local_file(name, storage=remote) as path:
            os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    with storage_local_file(names[0], storage=remote):  # a is used again: b is now the oldest
        pass
    with storage_local_file(names[2], storage=remote):
        pass
    assert not cache.entry_path(names[1]).exists()
    assert cache.entry_path(names[0]).exists() and cache.entry_path(names[2]).exists()
    stats = cache.stats()
    assert stats["used_bytes"] <= 250 and stats["evictions"] == 1


def test_an_entry_being_read_is_never_evicted(remote, cache_dir) -> None:
    names = [_put(remote, f"s/{n}.tif") for n in "abcd"]
    cache = MediaCache(cache_dir, 250)
    with cache.hold(names[0], version="", storage=remote) as held:
        for name in names[1:]:
            with cache.hold(name, version="", storage=remote):
                pass
        assert held.read_bytes() == b"x" * 100  # still there, though the oldest
    # once released it is the first to go when room is needed
    with cache.hold(_put(remote, "s/e.tif"), version="", storage=remote):
        pass
    assert not held.exists()


def test_health_shows_staff_the_cache(remote, cache_dir, settings, client, admin_user) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "testkit.storages.NoLocalPathStorage"},
    }
    assert storage_status()["local"] is False
    client.force_login(admin_user)
    body = client.get("/healthz").json()
    assert body["storage"]["backend"].endswith("NoLocalPathStorage")
    assert body["storage"]["media_cache"]["max_bytes"] == 250
    client.logout()
    assert "storage" not in client.get("/healthz").json()


def test_an_upload_already_on_disk_is_read_in_place(tmp_path: Path) -> None:
    """A resumable upload's assembled file (or Django's temporary upload file) is hashed and
    probed where it lies: the private folder holds a link under the upload's name, no copy."""
    import contextlib
    import hashlib

    from django.core.files import File

    from papreview.cases.services import _local_copy

    part = tmp_path / "17.part"
    part.write_bytes(b"\x89PNG" + b"x" * 5000)
    with part.open("rb") as fh, contextlib.ExitStack() as stack:
        path, sha256, size = _local_copy(File(fh, name="slide.png"), "slide.png", stack)
        assert path.name == "slide.png" and path.is_symlink() and path.resolve() == part
        assert (sha256, size) == (hashlib.sha256(part.read_bytes()).hexdigest(), 5004)
    assert not path.exists() and part.exists()  # the link went with its folder, not the file


def test_a_slide_zip_unpacked_in_the_cache_is_counted_and_evicted_with_it(
    remote, cache_dir
) -> None:
    """A slide zip unpacks beside its cache entry (`inference.archive`): the folder's bytes count
    against the limit (a MIRAX slide's data folder inside it too), and it goes when its zip goes."""
    zipped = _put(remote, "s/slide.zip", size=50)
    cache = MediaCache(cache_dir, 250)
    with cache.hold(zipped, version="", storage=remote) as path:
        unpacked = path.with_name(path.name + ".unpacked")
        (unpacked / "slide").mkdir(parents=True)
        (unpacked / "slide.mrxs").write_bytes(b"i" * 20)
        (unpacked / "slide" / "Data0000.dat").write_bytes(b"d" * 100)
    assert cache.stats()["used_bytes"] == 170
    with cache.hold(_put(remote, "s/b.tif"), version="", storage=remote):
        pass  # 270 bytes: over the limit, the zip is the oldest entry nobody holds
    assert not path.exists() and not unpacked.exists()
    assert cache.stats()["used_bytes"] == 100
    # a half-unpacked folder a killed process left (hidden, under a temporary name) goes later
    left = cache_dir / ".slide.zip.x1"
    left.mkdir()
    cache.clear_stale_parts(older_than_s=3600)
    assert left.exists()
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    cache.clear_stale_parts(older_than_s=3600)
    assert not left.exists() and (cache_dir / ".stats.json").exists()
