"""Multi-file whole slides uploaded as one zip, which one file upload cannot carry otherwise:
* a DICOM WSI is one file per pyramid level (and per label or overview image), all in one folder;
* a 3DHistech MIRAX slide is a `.mrxs` index plus a folder of the same name beside it
  (`Slidedat.ini`, `Index.dat`, `Data*.dat`).

`unpacked_slide(zip_path)` unpacks the zip once into a folder beside it (`<name>.unpacked/`,
written under a temporary name and renamed when complete, so that two processes opening the
slide at once never see half a folder) and returns the file the readers open: the DICOM level-0
instance, which OpenSlide and wsidicom open with its sibling levels, or the MIRAX index (renamed
`slide.mrxs` beside its folder `slide/`, so no name from the zip becomes a path). The zip is
checked before anything is written: DICOM files only, or one .mrxs and the flat files of its
folder; plain names, at most `MAX_MEMBERS` of them, no encryption, and at most `MAX_EXPANSION`
times the zip's own size unpacked (a zip bomb declares little and inflates to much: the bytes are
counted as they are written, whatever the headers say).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from .errors import UnreadableSlideError

ZIP_MAGIC = b"PK\x03\x04"  # a local file header; an empty zip starts with its end record
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
UNPACKED_SUFFIX = ".unpacked"
MAX_MEMBERS = 512  # levels x focal planes x optical paths, with room to spare
MAX_EXPANSION = 4  # DICOM WSI frames are JPEG already: they hardly shrink in a zip
_LEVEL0 = "level0.txt"  # written last in the folder: the name of the file the readers open
_MIRAX_SUFFIX = ".mrxs"
_MIRAX_INDEX = "slide.mrxs"  # OpenSlide finds the data in the folder named as the index
_MIRAX_SETTINGS = "Slidedat.ini"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_PIECE = 1024 * 1024


def is_zip(head: bytes) -> bool:
    return head.startswith((ZIP_MAGIC, _EMPTY_ZIP_MAGIC))


def unpacked_slide(path: Path) -> Path:
    """The level-0 DICOM instance of the slide zip at `path`, unpacked beside it on first use.
    Raises `UnreadableSlideError` (with what to do) for a zip that is not a DICOM WSI."""
    path = Path(path)
    folder = path.with_name(path.name + UNPACKED_SUFFIX)
    if not (folder / _LEVEL0).is_file():
        work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            level0 = _unpack(path, work)
            (work / _LEVEL0).write_text(level0)
            try:
                work.rename(folder)
            except OSError:  # another process finished first: use its folder
                if not (folder / _LEVEL0).is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder / (folder / _LEVEL0).read_text().strip()


def _refuse(path: Path, why: str) -> UnreadableSlideError:
    return UnreadableSlideError(
        f"{path.name}: {why}. A zip upload is for a whole slide of several files: a DICOM WSI "
        "(the slide's .dcm files, one per level, without folders) or a 3DHistech MRXS slide (its "
        ".mrxs file and the folder of the same name beside it); zip those and upload it again."
    )


def _unpack(path: Path, into: Path) -> str:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _refuse(path, f"not a readable zip ({exc})") from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise _refuse(path, "the zip holds no file")
        if len(members) > MAX_MEMBERS:
            raise _refuse(path, f"the zip holds {len(members)} files (at most {MAX_MEMBERS})")
        budget = MAX_EXPANSION * path.stat().st_size
        indexes = [m for m in members if m.filename.lower().endswith(_MIRAX_SUFFIX)]
        if indexes:
            return _unpack_mirax(archive, members, indexes, path, into, budget)
        names: set[str] = set()
        for member in members:
            name = member.filename.replace("\\", "/").rsplit("/", 1)[-1]
            _take_name(member, name, names, path)
            budget -= _copy(archive, member, into / name, budget, path)
            with (into / name).open("rb") as fh:
                if fh.read(132)[128:132] != b"DICM":
                    raise _refuse(path, f"{name} is not a DICOM file")
    return _level0(path, into, sorted(names))


def _take_name(member: zipfile.ZipInfo, name: str, names: set[str], path: Path) -> None:
    """Add `name` (what `member` is written as) to `names`: a plain name not taken yet, of a
    member that is not encrypted."""
    if member.flag_bits & 0x1:
        raise _refuse(path, f"{name} is encrypted")
    if not _SAFE_NAME.match(name) or name == _LEVEL0 or name in names:
        raise _refuse(path, f"{member.filename!r} is not a plain, unique file name")
    names.add(name)


def _unpack_mirax(
    archive: zipfile.ZipFile,
    members: list[zipfile.ZipInfo],
    indexes: list[zipfile.ZipInfo],
    path: Path,
    into: Path,
    budget: int,
) -> str:
    """One .mrxs index and the files of the folder of its name beside it (no deeper)."""
    if len(indexes) > 1:
        raise _refuse(path, f"the zip holds {len(indexes)} .mrxs files (one slide per zip)")
    index = indexes[0]
    folder = index.filename.replace("\\", "/")[: -len(_MIRAX_SUFFIX)] + "/"
    data = into / Path(_MIRAX_INDEX).stem
    data.mkdir()
    names: set[str] = set()
    for member in members:
        if member is index:
            continue
        name = member.filename.replace("\\", "/")
        inner = name[len(folder) :] if name.startswith(folder) else ""
        if not inner or "/" in inner:
            raise _refuse(
                path, f"{name!r} is not a file of the slide's folder {folder.rstrip('/')!r}"
            )
        _take_name(member, inner, names, path)
        budget -= _copy(archive, member, data / inner, budget, path)
    if _MIRAX_SETTINGS not in names:
        raise _refuse(path, f"the slide's folder {folder.rstrip('/')!r} holds no {_MIRAX_SETTINGS}")
    _take_name(index, _MIRAX_INDEX, set(), path)
    _copy(archive, index, into / _MIRAX_INDEX, budget, path)
    return _MIRAX_INDEX


def _copy(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, out: Path, budget: int, path: Path
) -> int:
    """Write one member, counting its bytes against what the zip may unpack to."""
    written = 0
    try:
        with archive.open(member) as src, out.open("wb") as dst:
            while piece := src.read(_PIECE):
                written += len(piece)
                if written > budget:
                    raise _refuse(
                        path, f"it unpacks to more than {MAX_EXPANSION}x its size (a zip bomb?)"
                    )
                dst.write(piece)
    except (zipfile.BadZipFile, EOFError, NotImplementedError) as exc:
        raise _refuse(path, f"{out.name} cannot be unpacked ({exc})") from exc
    return written


def _level0(path: Path, folder: Path, names: list[str]) -> str:
    """The volume instance with the most pixels: the pyramid's base, which OpenSlide opens with
    the other levels of its series beside it."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    best: tuple[int, str] | None = None
    for name in names:
        try:
            ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise _refuse(path, f"{name} is not a readable DICOM file ({exc})") from exc
        image_type = [str(t).upper() for t in getattr(ds, "ImageType", [])]
        if "VOLUME" not in image_type:
            continue  # a label or overview image
        pixels = int(getattr(ds, "TotalPixelMatrixColumns", 0)) * int(
            getattr(ds, "TotalPixelMatrixRows", 0)
        )
        if best is None or pixels > best[0]:
            best = (pixels, name)
    if best is None:
        raise _refuse(path, "the zip holds no DICOM whole-slide image level (image type VOLUME)")
    return best[1]
