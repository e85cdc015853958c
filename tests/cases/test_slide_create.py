"""slide_create: stream, hash, probe, store; refuse bad input without leaving anything behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.db import IntegrityError

from papreview.cases.errors import (
    DuplicateSlideError,
    InvalidSlideFileError,
    SlideTooLargeFileError,
)
from papreview.cases.models import Slide, SlideStatus
from papreview.cases.services import slide_create
from tests.conftest import stored_files
from tests.factories import PatientFactory, image_bytes, upload

pytestmark = pytest.mark.django_db


def test_a_valid_image_is_stored_and_described(media_root: Path) -> None:
    patient = PatientFactory.create()
    data = image_bytes(80, 60, fmt="PNG", seed=1)
    slide = slide_create(patient=patient, file=upload("my field.png", data))

    assert slide.status == SlideStatus.UPLOADED
    assert (slide.format, slide.kind, slide.width, slide.height) == ("png", "field", 80, 60)
    assert slide.sha256 == hashlib.sha256(data).hexdigest()
    assert slide.size_bytes == len(data)
    assert slide.original_filename == "my field.png"
    files = stored_files(media_root)
    assert len(files) == 1
    assert files[0].read_bytes() == data
    assert Path(slide.file.path) == files[0]


def test_jpeg_and_tiff_are_detected_from_their_bytes_not_the_name() -> None:
    patient = PatientFactory.create()
    jpeg = slide_create(patient=patient, file=upload("scan.png", image_bytes(fmt="JPEG", seed=2)))
    tiff = slide_create(patient=patient, file=upload("scan.bin", image_bytes(fmt="TIFF", seed=3)))
    assert (jpeg.format, tiff.format) == ("jpeg", "tiff")


def test_duplicate_for_the_same_patient_is_refused_and_nothing_is_added(media_root: Path) -> None:
    patient = PatientFactory.create()
    first = slide_create(patient=patient, file=upload("a.png", seed=4))
    with pytest.raises(DuplicateSlideError, match=f"already uploaded .* as slide {first.pk}"):
        slide_create(patient=patient, file=upload("copy-of-a.png", seed=4))
    assert Slide.objects.count() == 1
    assert len(stored_files(media_root)) == 1
    # The same file for another patient is a different case and is accepted.
    slide_create(patient=PatientFactory.create(), file=upload("a.png", seed=4))
    assert len(stored_files(media_root)) == 2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.png", b"this is a text file, not an image\n" * 20, "not a supported image"),
        ("empty.png", b"", "empty"),
        ("truncated.png", image_bytes(seed=5)[:60], "damaged or truncated"),
    ],
    ids=["text", "empty", "truncated"],
)
def test_files_that_are_not_images_are_refused(
    media_root: Path, name: str, content: bytes, message: str
) -> None:
    with pytest.raises(InvalidSlideFileError, match=message):
        slide_create(patient=PatientFactory.create(), file=upload(name, content))
    assert Slide.objects.count() == 0
    assert stored_files(media_root) == []


def test_too_many_pixels_is_refused(settings, media_root: Path) -> None:
    settings.SLIDE_MAX_PIXELS = 1000
    with pytest.raises(SlideTooLargeFileError):
        slide_create(patient=PatientFactory.create(), file=upload("big.png", image_bytes(64, 48)))
    assert stored_files(media_root) == []
    assert Slide.objects.count() == 0


def test_a_failed_insert_deletes_the_stored_file(monkeypatch, media_root: Path) -> None:
    def broken_save(self: Slide, *args: object, **kwargs: object) -> None:
        raise IntegrityError("simulated failure while inserting the row")

    monkeypatch.setattr(Slide, "save", broken_save)
    with pytest.raises(IntegrityError):
        slide_create(patient=PatientFactory.create(), file=upload("x.png", seed=6))
    assert stored_files(media_root) == []
    assert Slide.objects.count() == 0


def test_path_tricks_in_the_file_name_stay_inside_storage(media_root: Path) -> None:
    slide = slide_create(
        patient=PatientFactory.create(), file=upload("../../etc/passwd.png", seed=7)
    )
    stored = stored_files(media_root)
    assert len(stored) == 1 and stored[0].is_relative_to(media_root)
    assert slide.file.name and ".." not in slide.file.name
