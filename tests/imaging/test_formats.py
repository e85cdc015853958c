"""Slide formats end to end (issue 15, item 1), each with a file made here: uploaded through the
slide service, probed (format, kind, levels, microns per pixel) and served as Deep Zoom tiles whose
pixels are those of the image written into the file."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from inference.errors import UnreadableSlideError
from inference.formats import openslide_vendor, sniff_format, tiff_flavour
from inference.slides import open_slide, probe_slide
from papreview.cases.models import Slide
from papreview.cases.services import slide_create
from papreview.imaging import selectors as imaging
from testkit.images import field_image
from testkit.slidefiles import write_dicom_wsi, write_ndpi, write_ome_tiff, write_svs
from testkit.tiles import check_served, deepzoom_tile
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db
W, H = 2048, 1536


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return field_image(W, H, seed=7)


def _upload(path: Path) -> Slide:
    return slide_create(
        patient=PatientFactory.create(),
        file=SimpleUploadedFile(path.name, path.read_bytes()),
        original_filename=path.name,
    )


@pytest.mark.parametrize(
    ("writer", "fmt", "levels", "mpp"),
    [
        (lambda p, im: write_svs(p / "slide.svs", im, mpp=0.252), "aperio", 2, 0.252),
        (lambda p, im: write_ndpi(p / "slide.ndpi", im, mpp=0.25), "hamamatsu", None, 0.25),
        (lambda p, im: write_ome_tiff(p / "s.ome.tif", im, mpp=0.5), "ome-tiff", 3, 0.5),
    ],
    ids=["aperio-svs", "hamamatsu-ndpi", "ome-tiff"],
)
def test_whole_slide_formats(
    writer: Callable[[Path, np.ndarray], Path],
    fmt: str,
    levels: int | None,
    mpp: float,
    image: np.ndarray,
    tmp_path: Path,
    api,
    pathologist,
    client,
) -> None:
    path = writer(tmp_path, image)
    slide = _upload(path)
    assert (slide.kind, slide.format, slide.width, slide.height) == ("wsi", fmt, W, H)
    assert slide.mpp == pytest.approx(mpp, rel=1e-3)
    assert levels is None or slide.level_count == levels
    assert slide.level_count > 1
    check_served(api(pathologist), slide, image)
    # the microns per pixel are shown on the review page
    client.force_login(pathologist)
    page = client.get(f"/slides/{slide.pk}/").content.decode()
    assert f"{mpp:.3f} µm/px" in page


def test_ome_tiff_reads_its_levels_through_tifffile(image: np.ndarray, tmp_path: Path) -> None:
    """OpenSlide sees one level of an OME-TIFF (its pyramid is in SubIFDs): tifffile reads all."""
    path = write_ome_tiff(tmp_path / "s.ome.tif", image, mpp=0.5)
    assert tiff_flavour(path) == "ome" and openslide_vendor(path) == "generic-tiff"
    slide = _upload(path)
    opened = imaging.opened_slide(slide)
    assert type(opened.slide).__name__ == "ReaderSlide"
    assert opened.slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))


def _gray16(image: np.ndarray) -> np.ndarray:
    return (image.mean(axis=2) * 257).astype(np.uint16)


def _rgb8_of(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint16:
        array = (array.astype(float) / 257 + 0.5).astype(np.uint8)
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array


def _save(array: np.ndarray, path: Path, fmt: str) -> None:
    if fmt == "TIFF":
        tifffile.imwrite(path, array, photometric="rgb" if array.ndim == 3 else "minisblack")
    elif array.dtype == np.uint16:
        Image.fromarray(array).save(path, format=fmt)  # I;16
    else:
        Image.fromarray(array).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize(
    ("name", "fmt", "kind"),
    [
        ("f.jpg", "JPEG", "rgb"),
        ("f.png", "PNG", "rgb"),
        ("f.bmp", "BMP", "rgb"),
        ("f.tif", "TIFF", "rgb"),
        ("g.png", "PNG", "gray"),
        ("g.jpg", "JPEG", "gray"),
        ("g16.png", "PNG", "gray16"),
        ("g16.tif", "TIFF", "gray16"),
    ],
)
def test_plain_fields(name: str, fmt: str, kind: str, tmp_path: Path, api, pathologist) -> None:
    rgb = field_image(700, 500, seed=3)
    array = {"rgb": rgb, "gray": rgb.mean(axis=2).astype(np.uint8), "gray16": _gray16(rgb)}[kind]
    path = tmp_path / name
    _save(array, path, fmt)
    slide = _upload(path)
    assert slide.kind == "field" and slide.format == fmt.lower().replace("jpeg", "jpeg")
    assert (slide.width, slide.height) == (700, 500)
    expected = _rgb8_of(array)
    top = math.ceil(math.log2(700))
    tile = deepzoom_tile(api(pathologist), slide, top)
    assert np.abs(tile - expected[:256, :256]).mean() < 6


def test_a_sixteen_bit_rgb_tiff_field(tmp_path: Path) -> None:
    rgb16 = field_image(300, 200, seed=4).astype(np.uint16) * 257
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, rgb16, photometric="rgb", resolution=(4e4, 4e4), resolutionunit=3)
    info = probe_slide(path)
    assert (info.kind, info.format, info.mpp) == ("field", "tiff", pytest.approx(0.25))


def test_mrxs_and_ndpi_detection(image: np.ndarray, tmp_path: Path) -> None:
    ndpi = write_ndpi(tmp_path / "scan.ndpi", image[:512, :512].copy())
    assert sniff_format(ndpi.read_bytes()[:132]) == "tiff"
    assert openslide_vendor(ndpi) == "hamamatsu"  # OpenSlide's own detection, from the tags
    # an .mrxs alone is the index (often JPEG bytes) of a slide whose data lies in a folder
    mrxs = tmp_path / "scan.mrxs"
    Image.fromarray(image[:64, :64]).save(mrxs, format="JPEG")
    with pytest.raises(UnreadableSlideError, match="MRXS slide is this file plus a folder") as why:
        probe_slide(mrxs)
    assert "Upload both in one zip" in str(why.value)
    vms = mrxs.with_suffix(".vms")  # no zip of its folder is read: only how to export
    vms.write_bytes(mrxs.read_bytes())
    with pytest.raises(UnreadableSlideError, match="VMS slide is this file") as refused:
        probe_slide(vms)
    assert "zip (the .mrxs" not in str(refused.value)


def test_an_mrxs_upload_is_refused_in_words(api, pathologist, image, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image[:64, :64]).save(buffer, format="JPEG")
    patient = PatientFactory.create()
    response = api(pathologist).post(
        "/api/slides/",
        {"patient": patient.pk, "file": SimpleUploadedFile("scan.mrxs", buffer.getvalue())},
        format="multipart",
    )
    assert response.status_code == 400
    assert "folder of data files" in response.json()["detail"]


def test_dicom_wsi_through_openslide_4(image: np.ndarray, tmp_path: Path, api, pathologist):
    """A DICOM WSI made with pydicom: OpenSlide 4 reads it (openslide-bin ships 4.0), with its
    PixelSpacing as microns per pixel; an uploaded file is one level of it."""
    import openslide

    assert int(openslide.__library_version__.split(".")[0]) >= 4
    path = write_dicom_wsi(tmp_path / "level0.dcm", image, mpp=0.25)
    assert sniff_format(path.read_bytes()[:132]) == "dicom"
    slide = _upload(path)
    assert (slide.kind, slide.format, slide.width, slide.height) == ("wsi", "dicom", W, H)
    assert slide.mpp == pytest.approx(0.25)
    top = math.ceil(math.log2(W))
    tile = deepzoom_tile(api(pathologist), slide, top)
    assert np.abs(tile - image[:256, :256]).mean() < 8


def test_dicom_wsi_levels_in_one_folder_are_one_pyramid(image: np.ndarray, tmp_path: Path):
    from pydicom.uid import generate_uid

    series = generate_uid()
    first = write_dicom_wsi(tmp_path / "a.dcm", image, series_uid=series)
    write_dicom_wsi(tmp_path / "b.dcm", image, series_uid=series, downsample=4)
    info = probe_slide(first, max_pixels=1000)  # a pyramid: the field pixel limit does not apply
    assert (info.format, info.level_count, info.mpp) == ("dicom", 2, pytest.approx(0.25))
    with open_slide(first) as reader:
        assert reader.level_downsamples == pytest.approx((1.0, 4.0))
        low = reader.read_region((0, 0), 1, (128, 128)).astype(float)
        assert np.abs(low - image[::4, ::4][:128, :128]).mean() < 10


def test_a_dicom_file_that_is_no_slide_is_refused(tmp_path: Path) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.PatientID = "X"
    path = tmp_path / "other.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    with pytest.raises(UnreadableSlideError, match="DICOM file that is not a whole-slide image"):
        probe_slide(path)


def test_a_dicom_stack_declaring_more_than_its_frames_is_refused(tmp_path: Path) -> None:
    """OpenSlide refuses DICOM focal planes, so wsidicom reads them: a stack whose declared size
    does not match its frames gets a clear refusal, not a read of 40 Gpx."""
    import pydicom

    img = field_image(600, 400, seed=3)
    path = write_dicom_wsi(tmp_path / "z.dcm", img, planes=[img, img])
    ds = pydicom.dcmread(path)
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = 200_000
    ds.save_as(path)
    with pytest.raises(
        UnreadableSlideError, match="DICOM WSI with focal planes but cannot be read"
    ):
        probe_slide(path)


def test_a_one_level_dicom_stack_above_the_pixel_limit_says_why_and_what_to_do(
    tmp_path: Path,
) -> None:
    """An uploaded DICOM file is one level: every zoom reads it, so the pixel limit holds; the
    refusal says so (not "a field image") and how to export the slide instead."""
    from inference.errors import SlideTooLargeError

    img = field_image(600, 400, seed=3)
    path = write_dicom_wsi(tmp_path / "z.dcm", img, planes=[img, img])
    assert probe_slide(path, max_pixels=240_000).planes == 2  # at the limit: accepted
    with pytest.raises(SlideTooLargeError, match=r"no reduced levels.*pyramid levels in one file"):
        probe_slide(path, max_pixels=239_999)


def test_a_whole_slide_read_by_our_stack_readers_is_not_decoded_as_a_field(
    image: np.ndarray, tmp_path: Path
) -> None:
    """read_image is for fields: an OME-TIFF pyramid (read level by level by `stack_reader`)
    is refused with where to read it, as OpenSlide's whole slides are, not decoded whole."""
    from inference.slides import read_image

    path = write_ome_tiff(tmp_path / "s.ome.tif", image, mpp=0.5)
    with pytest.raises(UnreadableSlideError, match="is a whole-slide image"):
        read_image(path)
