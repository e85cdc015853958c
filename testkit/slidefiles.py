"""Whole-slide files in vendor formats, made on the spot with tifffile (no download): Aperio SVS,
Hamamatsu NDPI, OME-TIFF (pyramid, optional focal planes). Each holds the given RGB image at
level 0 and reduced copies below it."""

from __future__ import annotations

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
