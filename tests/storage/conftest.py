"""A real S3 server (moto's, a subprocess on loopback) for the object-storage tests, a bucket per
test, and the settings that put the test process's media in it (and nothing in MEDIA_ROOT)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from testkit.s3server import S3Server
from tests.analysis.conftest import tiny_weights  # noqa: F401 (a fixture used here)

# S3's smallest part is 5 MiB: files above it go up in parts (multipart upload).
PART = 5 * 1024 * 1024


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def s3_media(settings: Any, s3_server: S3Server, bucket: str, tmp_path: Path) -> str:
    """Media of the test process in `bucket`; this process's media cache in tmp_path/cache."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": s3_server.storage_options(
            bucket,
            transfer_config=TransferConfig(
                multipart_threshold=PART, multipart_chunksize=PART, use_threads=False
            ),
        ),
    }
    settings.MEDIA_CACHE_DIR = tmp_path / "cache-web"
    settings.MEDIA_CACHE_MAX_BYTES = 1024**3
    return bucket
