"""Hostile uploads, through POST /api/slides/ and the chunked upload API: each gets a clear 4xx
and nothing is stored (no slide row, no file in MEDIA_ROOT, no partial file left behind)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from papreview.cases.models import Slide
from papreview.uploads.models import Upload, UploadStatus
from testkit.images import hostile_tiff
from tests.conftest import stored_files
from tests.factories import PatientFactory, image_bytes

pytestmark = pytest.mark.django_db


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid, tiny PNG that declares width x height RGB pixels (3.6 gigapixels)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\0" + b"\0" * (3 * 64)  # a few rows' worth; the rest would inflate from nothing
    idat = zlib.compress(row * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def truncated(fmt: str) -> bytes:
    data = image_bytes(256, 256, fmt=fmt, seed=3)
    return data[: len(data) // 2]


# name, bytes, expected status, words the message must contain
CASES: dict[str, tuple[str, bytes, int, str]] = {
    "empty": ("empty.png", b"", 400, "empty"),
    "truncated-png": ("cut.png", truncated("PNG"), 400, ""),
    "truncated-jpeg": ("cut.jpg", truncated("JPEG"), 400, ""),
    "truncated-tiff": ("cut.tif", truncated("TIFF"), 400, ""),
    "text-named-png": ("slide.png", b"just some notes, not an image\n" * 50, 400, ""),
    "html-named-jpg": ("scan.jpg", b"<html><script>alert(1)</script></html>", 400, ""),
    "zip-named-tiff": ("scan.tiff", b"PK\x03\x04" + bytes(200), 400, ""),
    "decompression-bomb": ("bomb.png", png_bomb(), 413, "above the limit"),
    # a 50 KB tiled TIFF declaring 20000 x 20000 px (issue 15): refused before any tile is read
    "declared-beyond-bytes": ("huge.tif", hostile_tiff(), 400, "far too little for that many"),
    # a tiled TIFF with no pyramid: the pixel limit holds for it as for any field image
    "tiled-tiff-over-limit": (
        "tiled.tif",
        hostile_tiff(12_000, 10_000, padding=120_000),
        413,
        "above the limit",
    ),
}
# raw name, words of the refusal (multipart; JSON where it differs)
HOSTILE_NAMES: dict[str, tuple[bytes, str, str]] = {
    "traversal": (b"../../../etc/cron.d/evil.png", "folder path", ""),
    "windows-traversal": (b"..\\..\\windows\\evil.png", "folder path", ""),
    "absolute": (b"/etc/passwd", "folder path", ""),
    # Django drops a multipart part whose headers are not UTF-8: the API says so. In JSON such
    # bytes can only come as lone surrogates, which DRF refuses by name.
    "not-utf8": (b"sl\xffide\xfe.png", "not valid UTF-8", "Surrogate characters"),
    "latin1": (b"lame\xe9.png", "not valid UTF-8", "Surrogate characters"),
    "control": (b"evil\x07.png", "control characters", ""),
}


@pytest.fixture
def upload_tmp(settings: Any, tmp_path: Path) -> Path:
    settings.UPLOAD_TEMP_DIR = tmp_path / "parts"
    return Path(settings.UPLOAD_TEMP_DIR)


def assert_nothing_stored(media_root: Path, upload_tmp: Path) -> None:
    assert Slide.objects.count() == 0
    assert stored_files(media_root) == []
    assert not upload_tmp.exists() or stored_files(upload_tmp) == []


def multipart(filename: bytes, content: bytes, patient_id: int) -> bytes:
    boundary = b"----trust-boundary"
    return b"\r\n".join(
        [
            b"--" + boundary,
            b'Content-Disposition: form-data; name="patient"',
            b"",
            str(patient_id).encode(),
            b"--" + boundary,
            b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"',
            b"Content-Type: application/octet-stream",
            b"",
            content,
            b"--" + boundary + b"--",
            b"",
        ]
    )


def post_slide(client: Client, filename: bytes, content: bytes, patient_id: int) -> Any:
    return client.generic(
        "POST",
        "/api/slides/",
        multipart(filename, content, patient_id),
        content_type="multipart/form-data; boundary=----trust-boundary",
    )


def chunked(client: Client, filename: str, content: bytes, patient_id: int) -> tuple[Any, Any]:
    created = client.post(
        "/api/uploads/",
        {"patient": patient_id, "filename": filename, "size": max(len(content), 1)},
        content_type="application/json",
    )
    if created.status_code != 201:
        return created, None
    sent = client.generic(
        "PATCH",
        created["Location"],
        content,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET="0",
    )
    return created, sent


@pytest.mark.parametrize("case", list(CASES))
def test_bad_files_are_refused_through_the_slide_api(
    case: str, client: Client, pathologist: Any, media_root: Path, upload_tmp: Path
) -> None:
    name, content, status, words = CASES[case]
    client.force_login(pathologist)
    response = post_slide(client, name.encode(), content, PatientFactory.create().pk)
    assert response.status_code == status, response.content
    body = response.json()
    assert body["detail"] and body["code"] and words in body["detail"]
    assert_nothing_stored(media_root, upload_tmp)


@pytest.mark.parametrize("case", [c for c in CASES if c != "empty"])
def test_bad_files_are_refused_through_the_chunked_api(
    case: str, client: Client, pathologist: Any, media_root: Path, upload_tmp: Path
) -> None:
    name, content, status, words = CASES[case]
    client.force_login(pathologist)
    created, sent = chunked(client, name, content, PatientFactory.create().pk)
    assert created.status_code == 201
    assert sent.status_code == status, sent.content
    assert words in sent.json()["detail"]
    upload = Upload.objects.get()
    assert upload.status == UploadStatus.FAILED and upload.error and upload.slide_id is None
    assert_nothing_stored(media_root, upload_tmp)


def test_an_empty_file_is_refused_by_the_chunked_api_before_any_byte(
    client: Client, pathologist: Any, media_root: Path, upload_tmp: Path
) -> None:
    client.force_login(pathologist)
    response = client.post(
        "/api/uploads/",
        {"patient": PatientFactory.create().pk, "filename": "empty.png", "size": 0},
        content_type="application/json",
    )
    assert response.status_code == 400 and "size" in response.json()["fields"]
    assert Upload.objects.count() == 0
    assert_nothing_stored(media_root, upload_tmp)


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_hostile_file_names_are_refused_through_the_slide_api(
    case: str, client: Client, pathologist: Any, media_root: Path, upload_tmp: Path
) -> None:
    raw, words, _ = HOSTILE_NAMES[case]
    client.force_login(pathologist)
    response = post_slide(client, raw, image_bytes(seed=21), PatientFactory.create().pk)
    assert response.status_code == 400, response.content
    assert words in response.json()["detail"]
    assert_nothing_stored(media_root, upload_tmp)


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_hostile_file_names_are_refused_through_the_chunked_api(
    case: str, client: Client, pathologist: Any, media_root: Path, upload_tmp: Path
) -> None:
    raw, words, json_words = HOSTILE_NAMES[case]
    words = json_words or words
    # JSON carries text: bytes that are not UTF-8 arrive as lone surrogates (\udcff) at best.
    name = raw.decode("utf-8", errors="surrogateescape")
    client.force_login(pathologist)
    created, _ = chunked(client, name, image_bytes(seed=22), PatientFactory.create().pk)
    assert created.status_code == 400, created.content
    assert words in created.json()["detail"]
    assert Upload.objects.count() == 0
    assert_nothing_stored(media_root, upload_tmp)


def test_a_good_file_still_goes_through_both_ways(
    client: Client, pathologist: Any, media_root: Path, upload_tmp: Path
) -> None:
    client.force_login(pathologist)
    patient = PatientFactory.create()
    direct = post_slide(client, "caf\u00e9 field.png".encode(), image_bytes(seed=31), patient.pk)
    assert direct.status_code == 201, direct.content
    _created, sent = chunked(client, "field 2.png", image_bytes(seed=32), patient.pk)
    assert sent.status_code in (200, 201), sent.content
    assert Slide.objects.count() == 2 and len(stored_files(media_root)) == 2
