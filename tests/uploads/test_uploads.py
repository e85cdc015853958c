"""Resumable chunked uploads: offsets, resume, refusals through slide_create, constant memory."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import tracemalloc

import pytest
from django.core.management import call_command
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.test import force_authenticate

from papreview.cases.demo import synthetic_pap_bytes
from papreview.cases.models import Slide
from papreview.uploads.apis import UploadDetailApi
from papreview.uploads.models import Upload, UploadStatus
from papreview.uploads.services import IncompleteChunkError, upload_append, upload_create
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db
CHUNK_TYPE = "application/offset+octet-stream"


def start(client, patient_id: int, name: str, size: int):
    response = client.post("/api/uploads/", {"patient": patient_id, "filename": name, "size": size})
    assert response.status_code == 201, response.content
    assert response["Upload-Offset"] == "0"
    return response.json()


def send(client, upload_id: str, offset: int, chunk: bytes):
    return client.patch(
        f"/api/uploads/{upload_id}/",
        data=chunk,
        content_type=CHUNK_TYPE,
        HTTP_UPLOAD_OFFSET=str(offset),
    )


def test_a_file_in_chunks_becomes_a_slide(api, pathologist) -> None:
    data = synthetic_pap_bytes(seed=4, fmt="JPEG")
    patient = PatientFactory.create()
    client = api(pathologist)
    upload = start(client, patient.pk, "field.jpg", len(data))
    chunk = 40_000
    offset = 0
    while offset < len(data):
        response = send(client, upload["id"], offset, data[offset : offset + chunk])
        assert response.status_code == 200, response.content
        offset = int(response["Upload-Offset"])
    body = response.json()
    assert body["status"] == "complete" and body["offset"] == len(data)
    slide = Slide.objects.get(pk=body["slide"])
    assert body["slide_url"] == f"/slides/{slide.pk}/"
    assert slide.sha256 == hashlib.sha256(data).hexdigest()
    assert slide.original_filename == "field.jpg" and slide.format == "jpeg"
    assert (slide.width, slide.height) == (1376, 1020)
    assert slide.uploaded_by == pathologist
    assert not Upload.objects.get(pk=upload["id"]).part_path.exists()


def test_resume_after_a_dropped_connection(api, pathologist) -> None:
    data = synthetic_pap_bytes(seed=5)
    client = api(pathologist)
    upload = start(client, PatientFactory.create().pk, "field.png", len(data))
    half = len(data) // 2
    assert send(client, upload["id"], 0, data[:half]).status_code == 200
    # The connection drops: the client asks where to go on.
    head = client.head(f"/api/uploads/{upload['id']}/")
    assert head.status_code == 200 and head["Upload-Offset"] == str(half)
    # A chunk at a stale offset is refused with the offset the server has.
    stale = send(client, upload["id"], 0, data[:100])
    assert stale.status_code == 409
    assert stale.json()["code"] == "upload_offset_mismatch" and stale.json()["offset"] == half
    done = send(client, upload["id"], half, data[half:])
    assert done.status_code == 200 and done.json()["status"] == "complete"
    assert Slide.objects.get(pk=done.json()["slide"]).sha256 == hashlib.sha256(data).hexdigest()


class DroppingStream:
    """A request body whose connection breaks after `keep` bytes."""

    def __init__(self, data: bytes, keep: int) -> None:
        self.data, self.keep, self.pos = data, keep, 0

    def read(self, size: int = -1) -> bytes:
        if self.pos >= self.keep:
            raise ConnectionResetError("client went away")
        piece = self.data[self.pos : min(self.pos + size, self.keep)]
        self.pos += len(piece)
        return piece


def test_bytes_of_an_interrupted_chunk_do_not_count(api, pathologist) -> None:
    """A chunk cut short leaves the offset where it was; the next try overwrites its bytes."""
    data = synthetic_pap_bytes(seed=6)
    client = api(pathologist)
    upload = Upload.objects.get(
        pk=start(client, PatientFactory.create().pk, "cut.png", len(data))["id"]
    )
    half = len(data) // 2
    with pytest.raises(IncompleteChunkError):
        upload_append(
            upload=upload,
            offset=0,
            length=half,
            stream=DroppingStream(data[:half], keep=1000),
            by=pathologist,
        )
    upload.refresh_from_db()
    assert upload.offset == 0 and upload.part_path.stat().st_size == 1000
    done = send(client, str(upload.pk), 0, data)
    assert done.json()["status"] == "complete"
    assert Slide.objects.get(pk=done.json()["slide"]).sha256 == hashlib.sha256(data).hexdigest()


def test_a_corrupt_file_is_refused_with_its_reason_and_nothing_stored(
    api, pathologist, media_root
) -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 100
    client = api(pathologist)
    upload = start(client, PatientFactory.create().pk, "broken.png", len(data))
    response = send(client, upload["id"], 0, data)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_slide_file" and "broken.png" in body["detail"]
    assert body["upload"]["status"] == "failed"
    assert Slide.objects.count() == 0
    assert not [p for p in media_root.rglob("*") if p.is_file()]
    stored = Upload.objects.get(pk=upload["id"])
    assert stored.status == UploadStatus.FAILED and not stored.part_path.exists()
    # Reading it back says why; sending more is refused.
    assert client.get(f"/api/uploads/{upload['id']}/").json()["error"] == body["detail"]
    assert send(client, upload["id"], len(data), b"x").status_code == 409


def test_the_same_file_twice_for_a_patient_is_refused(api, pathologist) -> None:
    data = synthetic_pap_bytes(seed=7, fmt="JPEG")
    patient = PatientFactory.create()
    client = api(pathologist)
    first = start(client, patient.pk, "a.jpg", len(data))
    assert send(client, first["id"], 0, data).json()["status"] == "complete"
    again = start(client, patient.pk, "a-copy.jpg", len(data))
    response = send(client, again["id"], 0, data)
    assert response.status_code == 409 and response.json()["code"] == "duplicate_slide"
    assert "already uploaded" in response.json()["detail"]
    assert Slide.objects.count() == 1


def test_limits_and_ownership(api, pathologist, cytotech, viewer, settings) -> None:
    patient = PatientFactory.create()
    client = api(pathologist)
    settings.UPLOAD_MAX_BYTES = 1000
    too_big = client.post("/api/uploads/", {"patient": patient.pk, "filename": "x", "size": 1001})
    assert too_big.status_code == 413 and too_big.json()["code"] == "upload_too_large"
    upload = start(client, patient.pk, "f.png", 500)
    settings.UPLOAD_CHUNK_MAX_BYTES = 100
    assert send(client, upload["id"], 0, b"x" * 101).status_code == 413
    overflow = send(client, upload["id"], 0, b"x" * 100)
    assert overflow.status_code == 200
    settings.UPLOAD_CHUNK_MAX_BYTES = 1000
    assert send(client, upload["id"], 100, b"x" * 401).status_code == 400  # past the size
    # Another user cannot see or write someone's upload; a viewer cannot start one.
    assert api(cytotech).get(f"/api/uploads/{upload['id']}/").status_code == 404
    assert send(api(cytotech), upload["id"], 100, b"x").status_code == 404
    assert (
        api(viewer)
        .post("/api/uploads/", {"patient": patient.pk, "filename": "v", "size": 10})
        .status_code
        == 403
    )
    unknown = client.post("/api/uploads/", {"patient": 999999, "filename": "x", "size": 10})
    assert unknown.status_code == 400 and "Create the patient first" in unknown.json()["detail"]
    # Cancelling removes the partial file and the upload.
    part = Upload.objects.get(pk=upload["id"]).part_path
    assert part.exists()
    assert client.delete(f"/api/uploads/{upload['id']}/").status_code == 204
    assert not part.exists() and not Upload.objects.filter(pk=upload["id"]).exists()


def test_chunks_are_streamed_not_held_in_memory(pathologist, settings) -> None:
    """A 24 MiB chunk goes to disk in 1 MiB pieces: the view never reads the body at once (the
    form-post size cap would refuse it) and its peak allocation stays far below the chunk."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    size = 24 * 1024 * 1024
    upload = Upload.objects.create(
        patient=PatientFactory.create(), filename="big.png", size=size + 10, created_by=pathologist
    )
    upload.part_path.parent.mkdir(parents=True, exist_ok=True)
    upload.part_path.touch()
    body = bytes(range(256)) * (size // 256)
    request = RequestFactory().generic(
        "PATCH",
        f"/api/uploads/{upload.pk}/",
        body,
        content_type=CHUNK_TYPE,
        HTTP_UPLOAD_OFFSET="0",
    )
    force_authenticate(request, user=pathologist)
    view = UploadDetailApi.as_view()
    tracemalloc.start()
    try:
        response = view(request, upload_id=upload.pk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.data
    assert response["Upload-Offset"] == str(size)
    assert upload.part_path.stat().st_size == size
    assert peak < 6 * 1024 * 1024, f"peak {peak / 1024**2:.1f} MiB for a 24 MiB chunk"


def test_abandoned_uploads_expire(pathologist) -> None:
    patient = PatientFactory.create()
    old = upload_create(patient=patient, filename="old.svs", size=100, by=pathologist)
    fresh = upload_create(patient=patient, filename="new.svs", size=100, by=pathologist)
    Upload.objects.filter(pk=old.pk).update(updated_at=timezone.now() - dt.timedelta(days=3))
    out = io.StringIO()
    call_command("uploads_expire", "--hours", "48", stdout=out)
    assert "Removed 1 upload" in out.getvalue()
    assert not Upload.objects.filter(pk=old.pk).exists() and not old.part_path.exists()
    assert Upload.objects.filter(pk=fresh.pk).exists() and fresh.part_path.exists()


def test_beat_expires_abandoned_uploads_on_the_celery_queue(pathologist, settings) -> None:
    from papreview.celery import celery_app
    from papreview.uploads.tasks import uploads_expire_task

    entry = celery_app.conf.beat_schedule["uploads-expire"]
    assert entry["task"] == uploads_expire_task.name and entry["options"]["queue"] == "celery"
    assert entry["schedule"] == settings.UPLOAD_EXPIRE_INTERVAL_S == 3600.0
    settings.UPLOAD_EXPIRE_AFTER_H = 48.0
    patient = PatientFactory.create()
    old = upload_create(patient=patient, filename="old.svs", size=100, by=pathologist)
    fresh = upload_create(patient=patient, filename="new.svs", size=100, by=pathologist)
    Upload.objects.filter(pk=old.pk).update(updated_at=timezone.now() - dt.timedelta(hours=49))
    assert old.part_path.exists()

    assert uploads_expire_task.apply().get() == 1  # through Celery's task machinery, in place
    assert not Upload.objects.filter(pk=old.pk).exists() and not old.part_path.exists()
    assert Upload.objects.filter(pk=fresh.pk).exists() and fresh.part_path.exists()
    assert uploads_expire_task() == 0


def test_a_lost_partial_file_is_a_clear_refusal(api, pathologist) -> None:
    client = api(pathologist)
    upload = start(client, PatientFactory.create().pk, "lost.png", 200)
    assert send(client, upload["id"], 0, b"x" * 100).status_code == 200
    Upload.objects.get(pk=upload["id"]).part_path.unlink()
    response = send(client, upload["id"], 100, b"x" * 100)
    assert response.status_code == 409 and response.json()["code"] == "upload_lost"
    assert "Upload the file again" in response.json()["detail"]
    # Before any byte arrived, a missing part file is simply made again.
    fresh = start(client, PatientFactory.create().pk, "fresh.png", 10)
    Upload.objects.get(pk=fresh["id"]).part_path.unlink()
    assert send(client, fresh["id"], 0, b"y" * 5).json()["offset"] == 5
