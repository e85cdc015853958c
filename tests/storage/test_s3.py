"""Media in S3 for real: a moto server process on loopback, a real Celery worker (subprocess) with
its own media cache, and the web side in this process with another.

upload a field and a whole-slide image -> the worker analyses them (weights, slides read from the
bucket) -> tiles and cell crops -> sign-out -> the worker builds an export into the bucket ->
download; every file is in the bucket and none in MEDIA_ROOT."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from inference.synthetic import write_pyramidal_tiff
from inference.types import SlideKind
from papreview.accounts.roles import Role
from papreview.analysis.models import AnalysisRun, RunStatus
from papreview.cases.models import Slide, SlideStatus
from papreview.core.mediacache import media_cache
from papreview.core.storage import storage_local_file
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.datasets.services import dataset_export_create
from papreview.imaging.selectors import slide_cache_clear
from papreview.review.models import Cell
from papreview.workflow.services import slide_sign_out
from testkit.images import field_bytes
from testkit.s3server import S3Server
from testkit.workers import Worker, purge_queues, wait_for, worker_env
from tests.conftest import stored_files
from tests.factories import PatientFactory
from tests.storage.conftest import PART

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def role_groups(transactional_db: None) -> None:
    for role in Role:
        Group.objects.get_or_create(name=role.value)


def test_large_files_go_up_in_parts_and_are_read_through_the_cache(s3_media, s3_server) -> None:
    data = bytes(range(256)) * (PART * 2 // 256 + 1000)  # a little over two parts
    name = default_storage.save("slides/big.bin", ContentFile(data))
    etag = s3_server.client().head_object(Bucket=s3_media, Key=name)["ETag"].strip('"')
    assert etag.endswith("-3"), etag  # a multipart upload's ETag counts its parts
    for _ in range(2):
        with storage_local_file(name, version="v") as path:
            assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    stats = media_cache().stats()
    assert (stats["misses"], stats["hits"]) == (1, 1)


def _worker(tmp_path: Path, s3_server: S3Server, bucket: str, weights: Any) -> Worker:
    db = connection.settings_dict
    env = worker_env(
        f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        settings.CELERY_BROKER_URL,
        settings.MEDIA_ROOT,  # empty, and must stay so: the worker's media is the bucket
        weights,
        **s3_server.env(bucket),
        MEDIA_CACHE_DIR=str(tmp_path / "cache-worker"),
        DATASET_EXPORT_TMP_DIR=str(tmp_path / "export-tmp"),
    )
    purge_queues()
    return Worker("s3-test", env, tmp_path / "worker.log")


def _upload(client: Any, patient_id: int, name: str, content: bytes) -> int:
    response = client.post(
        "/api/slides/",
        {"patient": patient_id, "file": SimpleUploadedFile(name, content)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


def test_from_upload_to_download_with_every_file_in_the_bucket(
    s3_media, s3_server, settings, tiny_weights, api, pathologist, admin_user, client, tmp_path
) -> None:
    settings.ANALYSIS_DEFAULT_DETECTOR, settings.ANALYSIS_DEFAULT_CLASSIFIER = tiny_weights
    settings.INFERENCE_DEVICE = "cpu"
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # uploads arrive as temporary files
    settings.DATASET_EXPORT_TMP_DIR = tmp_path / "export-tmp-web"
    wsi = write_pyramidal_tiff(tmp_path / "wsi.tiff", 1024, 768, levels=3, mpp=0.5)
    worker = _worker(tmp_path, s3_server, s3_media, tiny_weights)
    try:
        worker.wait_ready()
        api_client = api(pathologist)
        ids = [
            _upload(api_client, PatientFactory.create().pk, "field.png", field_bytes(256, 256)),
            _upload(api_client, PatientFactory.create().pk, "slide.tiff", wsi.read_bytes()),
        ]

        def analysed() -> bool:
            return all(
                Slide.objects.get(pk=i).status in (SlideStatus.ANALYSED, SlideStatus.FAILED)
                for i in ids
            )

        wait_for(analysed, timeout=180, interval=0.2, what="both slides analysed")
        slides = [Slide.objects.get(pk=i) for i in ids]
        assert [s.kind for s in slides] == [SlideKind.FIELD, SlideKind.WHOLE_SLIDE]
        for slide in slides:
            assert slide.status == SlideStatus.ANALYSED, (slide.failure_reason, worker.output())
            assert AnalysisRun.objects.get(slide=slide).status == RunStatus.SUCCEEDED
        assert "pipeline loaded" in worker.output()

        # Tiles and crops on the review page: read from the bucket through this host's cache.
        for slide in slides:
            assert api_client.get(f"/api/slides/{slide.pk}/deepzoom.dzi").status_code == 200
            tile = api_client.get(f"/api/slides/{slide.pk}/deepzoom_files/8/0_0.jpeg")
            assert tile.status_code == 200 and tile["Content-Type"] == "image/jpeg"
            cell = Cell.objects.filter(slide=slide).first()
            assert cell is not None, "the random-weight pipeline finds cells"
            crop = api_client.get(f"/api/cells/{cell.pk}/crop/")
            assert crop.status_code == 200, crop.content
        slide_cache_clear()  # a new tile server process: the files come from the cache
        for slide in slides:
            assert api_client.get(f"/api/slides/{slide.pk}/deepzoom.dzi").status_code == 200
        web = media_cache().stats()
        assert web["misses"] == 2 and web["hits"] >= 2, web

        # Sign-out, an export built by the worker into the bucket, and its download.
        for slide in slides:
            slide_sign_out(slide=slide, by=pathologist, bethesda_category="SCC")
        export = dataset_export_create(
            name="s3", created_by=pathologist, params={"train_only": True}
        )

        def built() -> bool:
            status = DatasetExport.objects.get(pk=export.pk).status
            return status in (ExportStatus.READY, ExportStatus.FAILED)

        wait_for(built, timeout=120, interval=0.2, what="the export")
        export.refresh_from_db()
        assert export.status == ExportStatus.READY, (export.error, worker.output()[-3000:])
        download = api_client.get(f"/api/exports/{export.pk}/download/")
        assert download.status_code == 200
        body = b"".join(download.streaming_content)
        assert hashlib.sha256(body).hexdigest() == export.sha256 == download["X-Checksum-SHA256"]
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            assert "manifest.json" in zf.namelist()
    finally:
        worker.stop()

    keys = set(s3_server.keys(s3_media))
    assert {s.file.name for s in slides} <= keys
    assert str(export.file.name) in keys
    assert any(k.startswith("models/detector/") for k in keys)
    assert any(k.startswith("models/classifier/") for k in keys)
    assert stored_files(Path(settings.MEDIA_ROOT)) == []  # nothing in the local media folder
    worker_cache = list((tmp_path / "cache-worker").glob("*.*"))
    assert len([p for p in worker_cache if not p.name.startswith(".")]) >= 4  # 2 slides + weights

    client.force_login(admin_user)
    health = client.get("/healthz").json()["storage"]
    assert health["local"] is False and health["backend"].endswith("S3Storage")
    assert health["media_cache"]["hit_rate"] > 0
