"""Whole-slide files in vendor formats, made on the spot (no download): Aperio SVS, Hamamatsu
NDPI, OME-TIFF (pyramid, optional focal planes) with tifffile, DICOM WSI with pydicom, 3DHistech
MIRAX by hand. Each holds the given RGB image at level 0 and reduced copies below it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tifffile

APERIO = "Aperio Image Library v12.0.15 \n"


def _reduced(image: np.ndarray, factor: int) -> np.ndarray:
    return np.ascontiguousarray(image[::factor, ::factor])


def write_svs(path: Path, image: np.ndarray, *, mpp: float = 0.252, tile: int = 256) -> Path:
    """Aperio SVS: JPEG tiles (YCbCr), the Aperio description with MPP and AppMag, a stripped
    thumbnail as the second directory (as scanners write it), then a /4 level."""
    h, w = image.shape[:2]
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            image,
            tile=(tile, tile),
            photometric="rgb",
            compression="jpeg",
            compressionargs={"level": 92},
            description=f"{APERIO}{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q=92"
            f"|AppMag = 40|MPP = {mpp:.4f}",
            metadata=None,
        )
        thumb = _reduced(image, 8)
        tif.write(thumb, photometric="rgb", description=f"{APERIO}{w}x{h} -> thumb", metadata=None)
        low = _reduced(image, 4)
        tif.write(
            low,
            tile=(tile, tile),
            photometric="rgb",
            compression="jpeg",
            compressionargs={"level": 92},
            description=f"{APERIO}{w}x{h} -> {low.shape[1]}x{low.shape[0]} - |MPP = {mpp * 4:.4f}",
            metadata=None,
        )
    return path


def write_ndpi(path: Path, image: np.ndarray, *, mpp: float = 0.25) -> Path:
    """Hamamatsu NDPI as OpenSlide knows it: JPEG levels (one strip each) carrying the NDPI tags
    (format flag 65420, source lens, offsets, focal plane) and the resolution in centimetres."""
    with tifffile.TiffWriter(path) as tif:
        for i, level in enumerate((image, _reduced(image, 4))):
            per_cm = 1e4 / (mpp * 4**i)
            tif.write(
                level,
                photometric="rgb",
                compression="jpeg",
                subsampling=(1, 1),
                rowsperstrip=level.shape[0],
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                metadata=None,
                extratags=[
                    (65420, 4, 1, 1, True),  # NDPI format flag
                    (65421, 11, 1, 20.0, True),  # source lens (x20)
                    (65422, 9, 1, 0, True),  # x offset
                    (65423, 9, 1, 0, True),  # y offset
                    (65424, 9, 1, 0, True),  # focal plane
                ],
            )
    return path


def write_ome_tiff(
    path: Path,
    image: np.ndarray,
    *,
    mpp: float = 0.5,
    levels: int = 3,
    planes: list[np.ndarray] | None = None,
    tile: int = 256,
) -> Path:
    """OME-TIFF with its pyramid in SubIFDs (OpenSlide sees one level of it), PhysicalSizeX in µm,
    and, given `planes`, a Z stack (axes ZYXS) of those focal planes instead of `image`."""
    stack = np.stack(planes) if planes else image
    axes = "ZYXS" if planes else "YXS"
    metadata = {
        "axes": axes,
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": "µm",
    }
    options = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(stack, subifds=levels - 1, metadata=metadata, **options)  # type: ignore[arg-type]
        for level in range(1, levels):
            f = 2**level
            reduced = np.ascontiguousarray(stack[..., ::f, ::f, :])
            tif.write(reduced, subfiletype=1, metadata=None, **options)  # type: ignore[arg-type]
    return path


def write_dicom_wsi(
    path: Path,
    image: np.ndarray,
    *,
    mpp: float = 0.25,
    tile: int = 256,
    series_uid: str | None = None,
    downsample: int = 1,
    planes: list[np.ndarray] | None = None,
    plane_spacing_um: float = 2.0,
) -> Path:
    """One level of a DICOM WSI (VL Whole Slide Microscopy Image, TILED_FULL, JPEG baseline
    frames), written with pydicom. Levels of one slide share `series_uid` and lie in one folder,
    where OpenSlide 4 finds them from any one of the files. Given `planes`, a Z stack of those
    focal planes `plane_spacing_um` apart instead of `image` (TILED_FULL: the frames of plane 0,
    then of plane 1, ...)."""
    import io

    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, JPEGBaseline8Bit, generate_uid

    stack = [_reduced(p, downsample) if downsample > 1 else p for p in planes or [image]]
    h, w = stack[0].shape[:2]
    frames = []
    for level in stack:
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                frame = np.full((tile, tile, 3), 255, np.uint8)
                part = level[y : y + tile, x : x + tile]
                frame[: part.shape[0], : part.shape[1]] = part
                buffer = io.BytesIO()
                Image.fromarray(frame).save(buffer, format="JPEG", quality=92)
                frames.append(buffer.getvalue())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.77.1.6")  # VL WSI
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    # the levels of one series share its study and frame of reference, as a scanner writes them
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[ds.SeriesInstanceUID, "study"])
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[ds.SeriesInstanceUID, "frame"])
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PatientName, ds.PatientID = "Test^Slide", "T1"
    ds.Rows, ds.Columns, ds.NumberOfFrames = tile, tile, len(frames)
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
    ds.TotalPixelMatrixFocalPlanes = ds.NumberOfFocalPlanes = len(stack)
    ds.NumberOfOpticalPaths = 1
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    spacing_mm = mpp * downsample / 1000
    ds.ImagedVolumeWidth, ds.ImagedVolumeHeight = w * spacing_mm, h * spacing_mm
    ds.ImagedVolumeDepth = 0.001
    measures = Dataset()
    measures.PixelSpacing = [spacing_mm, spacing_mm]
    measures.SliceThickness = 0.001
    if len(stack) > 1:
        measures.SpacingBetweenSlices = plane_spacing_um / 1000
        ds.DistanceBetweenFocalPlanes = plane_spacing_um / 1000
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    optical = Dataset()
    optical.OpticalPathIdentifier = "1"
    ds.OpticalPathSequence = [optical]
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_mrxs(path: Path, image: np.ndarray, *, mpp: float = 0.25, tile: int = 256) -> Path:
    """3DHistech MIRAX as OpenSlide reads it: `path` (a .mrxs, here a small JPEG as scanners
    write a preview) and the folder beside it of the same name with `Slidedat.ini`, `Index.dat`
    and `Data0000.dat`. One camera image per `tile` x `tile` px of level 0, no overlap (so no
    position map); level k holds one JPEG per 2^k x 2^k images, shrunk 2^k times, down to one
    image. The image's sides must be multiples of `tile`. The layout of `Index.dat` (version,
    slide id, the hierarchical root, per level a page of (image, offset, length, file) records)
    is OpenSlide's reading of the format (src/openslide-vendor-mirax.c)."""
    import io
    import struct
    import uuid

    from PIL import Image

    h, w = image.shape[:2]
    if w % tile or h % tile:
        raise ValueError(f"the image's sides ({w} x {h}) must be multiples of {tile}")
    across, down = w // tile, h // tile
    levels = 1 + max(0, math.ceil(math.log2(max(across, down))))
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    data = bytearray()
    pages: list[list[tuple[int, int, int]]] = []  # per level: (image index, offset, length)
    for level in range(levels):
        concat = 1 << level
        span = tile * concat  # level-0 px per image side
        records = []
        for y in range(0, down, concat):
            for x in range(0, across, concat):
                region = np.full((span, span, 3), 255, np.uint8)
                part = image[y * tile : y * tile + span, x * tile : x * tile + span]
                region[: part.shape[0], : part.shape[1]] = part
                buffer = io.BytesIO()
                Image.fromarray(np.ascontiguousarray(region[::concat, ::concat])).save(
                    buffer, format="JPEG", quality=92
                )
                records.append((y * across + x, len(data), len(buffer.getvalue())))
                data += buffer.getvalue()
        pages.append(records)
    (folder / "Data0000.dat").write_bytes(bytes(data))

    slide_id = str(uuid.uuid4())
    head = b"01.02" + slide_id.encode()
    # the hierarchical root points at one pointer per level; each points at (0, page); a page
    # is (count, next page = 0, records); the non-hierarchical root (no records) points nowhere
    table = len(head) + 8
    level_ptrs = [table + 4 * levels]
    for records in pages[:-1]:
        level_ptrs.append(level_ptrs[-1] + 8 + 8 + 16 * len(records))
    index = bytearray(head + struct.pack("<ii", table, 0))
    index += struct.pack(f"<{levels}i", *level_ptrs)
    for ptr, records in zip(level_ptrs, pages, strict=True):
        index += struct.pack("<iiii", 0, ptr + 8, len(records), 0)
        for image_index, offset, length in records:
            index += struct.pack("<iiii", image_index, offset, length, 0)
    (folder / "Index.dat").write_bytes(bytes(index))

    ini = [
        "[GENERAL]",
        "SLIDE_VERSION=01.03",
        f"SLIDE_ID={slide_id}",
        f"IMAGENUMBER_X={across}",
        f"IMAGENUMBER_Y={down}",
        "OBJECTIVE_MAGNIFICATION=40",
        "CameraImageDivisionsPerSide=1",
        "[HIERARCHICAL]",
        "HIER_COUNT=1",
        "NONHIER_COUNT=0",
        "INDEXFILE=Index.dat",
        "HIER_0_NAME=Slide zoom level",
        f"HIER_0_COUNT={levels}",
    ]
    for level in range(levels):
        ini += [
            f"HIER_0_VAL_{level}=ZoomLevel_{level}",
            f"HIER_0_VAL_{level}_SECTION=LEVEL_{level}",
        ]
    ini += ["[DATAFILE]", "FILE_COUNT=1", "FILE_0=Data0000.dat"]
    for level in range(levels):
        ini += [
            f"[LEVEL_{level}]",
            f"IMAGE_CONCAT_FACTOR={0 if level == 0 else 1}",
            "OVERLAP_X=0",
            "OVERLAP_Y=0",
            f"MICROMETER_PER_PIXEL_X={mpp * (1 << level)}",
            f"MICROMETER_PER_PIXEL_Y={mpp * (1 << level)}",
            "IMAGE_FILL_COLOR_BGR=16777215",
            f"DIGITIZER_WIDTH={tile}",
            f"DIGITIZER_HEIGHT={tile}",
            "IMAGE_FORMAT=JPEG",
        ]
    (folder / "Slidedat.ini").write_text("\n".join(ini) + "\n")
    preview = io.BytesIO()
    Image.fromarray(_reduced(image, 16)).save(preview, format="JPEG")
    path.write_bytes(preview.getvalue())
    return path
