"""A 3DHistech MIRAX slide is a .mrxs index plus a folder of the same name beside it: made here
(`testkit.slidefiles.write_mrxs`), it is read through OpenSlide with its microns per pixel, and
uploaded as one zip of both it is unpacked beside the stored zip and served at every level; a zip
that is not one such slide, or would unpack to far more than its size, is refused with what to
do and leaves nothing behind."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from inference.errors import UnreadableSlideError
from inference.slides import open_slide, probe_slide
from papreview.cases.models import Slide
from papreview.core.storage import local_path_of
from testkit.images import field_image
from testkit.slidefiles import write_mrxs
from testkit.tiles import check_served
from tests.factories import PatientFactory

W, H = 2048, 1536


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return field_image(W, H, seed=12)


def _zip_of(index: Path, path: Path, top: str = "") -> Path:
    """The index and its folder in one zip, as a person zips them (under `top`, if given)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(index, top + index.name)
        for f in sorted(index.with_suffix("").iterdir()):
            zf.write(f, f"{top}{index.stem}/{f.name}")
    return path


def test_a_mirax_slide_is_read_through_openslide_with_its_microns_per_pixel(
    image: np.ndarray, tmp_path: Path
) -> None:
    index = write_mrxs(tmp_path / "scan.mrxs", image, mpp=0.25)
    info = probe_slide(index, max_pixels=1000)  # a pyramid: the field pixel limit does not hold
    assert (info.kind, info.format, info.width, info.height) == ("wsi", "mirax", W, H)
    assert (info.mpp, info.level_count) == (pytest.approx(0.25), 4)
    with open_slide(index) as reader:
        assert reader.level_downsamples == pytest.approx((1.0, 2.0, 4.0, 8.0))
        full = reader.read_region((300, 200), 0, (256, 256)).astype(float)
        assert np.abs(full - image[200:456, 300:556]).mean() < 6
        low = reader.read_region((0, 0), 2, (256, 256)).astype(float)
        assert np.abs(low - image[::4, ::4][:256, :256]).mean() < 6


@pytest.mark.django_db
def test_an_uploaded_mirax_zip_is_unpacked_once_and_serves_every_level(
    image: np.ndarray, tmp_path: Path, api, pathologist, settings
) -> None:
    settings.SLIDE_MAX_PIXELS = 1_000_000  # below level 0: only a pyramid is accepted
    index = write_mrxs(tmp_path / "Scan 7.mrxs", image, mpp=0.25)  # a name with a space
    zipped = _zip_of(index, tmp_path / "scan.zip", top="export/")
    client = api(pathologist)
    response = client.post(  # as the upload page sends it
        "/api/slides/",
        {
            "patient": PatientFactory.create().pk,
            "file": SimpleUploadedFile("scan.zip", zipped.read_bytes()),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content[:300]
    slide = Slide.objects.get(pk=response.json()["id"])
    assert (slide.kind, slide.format, slide.level_count) == ("wsi", "mirax", 4)
    assert (slide.width, slide.height, slide.mpp) == (W, H, pytest.approx(0.25))
    stored = local_path_of(str(slide.file.name))
    assert stored is not None
    unpacked = stored.parent / (stored.name + ".unpacked")
    assert (unpacked / "slide.mrxs").is_file()  # renamed: no name from the zip becomes a path
    assert sorted(p.name for p in (unpacked / "slide").iterdir()) == [
        "Data0000.dat",
        "Index.dat",
        "Slidedat.ini",
    ]
    check_served(client, slide, image)


def _members(tmp_path: Path) -> dict[str, bytes]:
    index = write_mrxs(tmp_path / "made" / "s.mrxs", field_image(512, 256, seed=1))
    files = {"s.mrxs": index.read_bytes()}
    for f in index.with_suffix("").iterdir():
        files[f"s/{f.name}"] = f.read_bytes()
    return files


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"t.mrxs": b"x"}, "holds 2 .mrxs files"),
        ({"notes.txt": b"hello"}, "'notes.txt' is not a file of the slide's folder 's'"),
        ({"s/deeper/Data0001.dat": b"x"}, "is not a file of the slide's folder"),
        ({"s/Slidedat.ini": None}, "holds no Slidedat.ini"),
        ({"s/Data0001.dat": bytes(8_000_000)}, "more than 4x its size"),
    ],
    ids=["two-slides", "stray-file", "nested-folder", "no-settings", "zip-bomb"],
)
def test_a_zip_that_is_no_mirax_slide_is_refused_with_what_to_do(
    tmp_path: Path, change: dict[str, bytes | None], why: str
) -> None:
    files = _members(tmp_path)
    for name, data in change.items():
        if data is None:
            del files[name]
        else:
            files[name] = data
    zipped = tmp_path / "bad.zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(UnreadableSlideError, match=why) as refused:
        probe_slide(zipped)
    assert ".mrxs file and the folder of the same name" in str(refused.value)
    assert not (tmp_path / "bad.zip.unpacked").exists()  # nothing half unpacked stays
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_mirax_index_whose_folder_declares_more_than_its_bytes_is_refused(
    tmp_path: Path,
) -> None:
    index = write_mrxs(tmp_path / "s.mrxs", field_image(512, 256, seed=1))
    settings = index.with_suffix("") / "Slidedat.ini"
    text = settings.read_text().replace("DIGITIZER_WIDTH=256", "DIGITIZER_WIDTH=2000000")
    settings.write_text(text)
    with pytest.raises(UnreadableSlideError, match="far too little for that many pixels"):
        probe_slide(index)
