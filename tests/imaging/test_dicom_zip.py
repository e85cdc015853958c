"""A DICOM WSI is one file per pyramid level: uploaded as one zip, it is unpacked once beside the
stored zip and read as one pyramid (tiles at every level, analysis, crops); a zip that is no
DICOM slide, or that would unpack to far more than its size, is refused with what to do."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from inference import archive
from inference.errors import UnreadableSlideError
from inference.slides import open_slide, probe_slide
from papreview.cases.errors import InvalidSlideFileError
from papreview.cases.services import slide_create
from papreview.core.storage import local_path_of
from testkit.images import field_image
from testkit.slidefiles import write_dicom_wsi
from testkit.tiles import check_served
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db
W, H = 2048, 1536


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return field_image(W, H, seed=11)


def _levels(folder: Path, image: np.ndarray) -> list[Path]:
    """Level 0, a 1/4 level and a label image of one series, as a scanner exports them."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    base = write_dicom_wsi(folder / "b0.dcm", image, series_uid=series, mpp=0.25)
    low = write_dicom_wsi(folder / "b1.dcm", image, series_uid=series, downsample=4)
    label = write_dicom_wsi(folder / "label.dcm", image[:256, :256], series_uid=series)
    ds = pydicom.dcmread(label)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    ds.save_as(label)
    return [low, label, base]  # the base level last: found by its size, not its place


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _slide_zip(tmp_path: Path, image: np.ndarray) -> Path:
    files = _levels(tmp_path / "export", image)
    return _zip(tmp_path / "slide.zip", {f"SLIDE 1/{f.name}": f.read_bytes() for f in files})


def test_a_zip_of_dicom_levels_is_one_pyramid_unpacked_once(
    image: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zipped = _slide_zip(tmp_path, image)
    info = probe_slide(zipped, max_pixels=1000)  # a pyramid: the field pixel limit does not hold
    assert (info.format, info.level_count, info.width, info.height) == ("dicom", 2, W, H)
    assert info.mpp == pytest.approx(0.25)
    with open_slide(zipped) as reader:
        assert reader.level_downsamples == pytest.approx((1.0, 4.0))
        low = reader.read_region((0, 0), 1, (128, 128)).astype(float)
        assert np.abs(low - image[::4, ::4][:128, :128]).mean() < 10
    unpacked = tmp_path / "slide.zip.unpacked"
    assert sorted(p.name for p in unpacked.iterdir()) == [
        "b0.dcm",
        "b1.dcm",
        "label.dcm",
        "level0.txt",
    ]

    def unpack_again(*args: object) -> str:
        raise AssertionError("unpacked twice")

    monkeypatch.setattr(archive, "_unpack", unpack_again)
    assert probe_slide(zipped).level_count == 2  # the folder beside the zip is reused


def test_an_uploaded_dicom_zip_serves_every_level(
    image: np.ndarray, tmp_path: Path, api, pathologist, settings
) -> None:
    settings.SLIDE_MAX_PIXELS = 1_000_000  # below level 0: only a pyramid is accepted
    zipped = _slide_zip(tmp_path, image)
    slide = slide_create(
        patient=PatientFactory.create(),
        file=SimpleUploadedFile("slide.zip", zipped.read_bytes()),
        original_filename="slide.zip",
    )
    assert (slide.kind, slide.format, slide.level_count) == ("wsi", "dicom", 2)
    assert (slide.width, slide.height, slide.mpp) == (W, H, pytest.approx(0.25))
    stored = local_path_of(str(slide.file.name))
    assert stored is not None and stored.suffix == ".zip"
    assert (stored.parent / "slide.zip.unpacked" / "b0.dcm").is_file()  # unpacked at upload
    check_served(api(pathologist), slide, image)


def test_a_zip_of_focal_plane_levels_is_one_stack_with_its_levels(tmp_path: Path) -> None:
    """OpenSlide refuses focal planes, so wsidicom reads them: from an unpacked zip, all levels."""
    from pydicom.uid import generate_uid

    near, far = field_image(1024, 768, seed=2), field_image(1024, 768, seed=3)
    series, folder = generate_uid(), tmp_path / "export"
    folder.mkdir()
    for name, down in (("z0.dcm", 1), ("z1.dcm", 4)):
        write_dicom_wsi(folder / name, near, planes=[near, far], series_uid=series, downsample=down)
    zipped = _zip(tmp_path / "z.zip", {f.name: f.read_bytes() for f in folder.iterdir()})
    info = probe_slide(zipped, max_pixels=1000)
    assert (info.format, info.planes, info.level_count) == ("dicom", 2, 2)
    with open_slide(zipped) as reader:
        assert reader.level_downsamples == pytest.approx((1.0, 4.0))


def _dicom_bytes(tmp_path: Path) -> bytes:
    return write_dicom_wsi(tmp_path / "one.dcm", field_image(300, 200, seed=1)).read_bytes()


@pytest.mark.parametrize(
    ("members", "method", "why"),
    [
        ({"notes.txt": b"hello"}, zipfile.ZIP_STORED, "notes.txt is not a DICOM file"),
        ({"a/x.dcm": None, "b/x.dcm": None}, zipfile.ZIP_STORED, "not a plain, unique"),
        ({"big.dcm": bytes(8_000_000)}, zipfile.ZIP_DEFLATED, "more than 4x its size"),
        ({}, zipfile.ZIP_STORED, "holds no file"),
    ],
    ids=["not-dicom", "same-name-twice", "zip-bomb", "empty"],
)
def test_a_zip_that_is_no_dicom_slide_is_refused_with_what_to_do(
    tmp_path: Path, members: dict[str, bytes | None], method: int, why: str
) -> None:
    dicom = _dicom_bytes(tmp_path)  # None: a valid DICOM level
    files = {"one.dcm": dicom, **{k: dicom if v is None else v for k, v in members.items()}}
    zipped = _zip(tmp_path / "bad.zip", files if members else {}, method)
    with pytest.raises(UnreadableSlideError, match=why) as refused:
        probe_slide(zipped)
    assert "the slide's .dcm files, one per level" in str(refused.value)
    assert not (tmp_path / "bad.zip.unpacked").exists()  # nothing half unpacked stays
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_zip_without_a_slide_level_is_refused_at_upload(tmp_path: Path) -> None:
    import pydicom

    label = write_dicom_wsi(tmp_path / "label.dcm", field_image(300, 200, seed=1))
    ds = pydicom.dcmread(label)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    ds.save_as(label)
    zipped = _zip(tmp_path / "labels.zip", {"label.dcm": label.read_bytes()})
    with pytest.raises(InvalidSlideFileError, match="no DICOM whole-slide image level"):
        slide_create(
            patient=PatientFactory.create(),
            file=SimpleUploadedFile("labels.zip", zipped.read_bytes()),
            original_filename="labels.zip",
        )


def test_an_upload_whose_row_cannot_be_written_leaves_no_zip_and_no_folder(
    image: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    from papreview.cases import services

    def fail(**kwargs: object) -> None:
        raise RuntimeError("database gone")

    monkeypatch.setattr(services, "audit_record", fail)
    zipped = _slide_zip(tmp_path, image)
    media = Path(settings.MEDIA_ROOT)
    before = set(media.rglob("*")) if media.exists() else set()
    with pytest.raises(RuntimeError, match="database gone"):
        slide_create(
            patient=PatientFactory.create(),
            file=SimpleUploadedFile("slide.zip", zipped.read_bytes()),
            original_filename="slide.zip",
        )
    new = set(media.rglob("*")) - before
    assert not [p for p in new if p.suffix == ".zip" or p.name.endswith(".unpacked")]
