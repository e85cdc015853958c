"""One writer per export format, streaming to disk (never the whole set in memory).

The build hands each slide (`ExportSlide`: its cells with their labels and provenance, and its
reader) and then each of its images (`ExportImage`: a field, or a tile of a whole-slide image)
to every writer in `format_writers`; a writer takes what its format needs. Adding a format is
one `FormatWriter` subclass and a line in `format_writers`.

The layout and the label conventions come from `inference.data.export` (the reader), so the
writers and the reader cannot drift apart.

Just over our ~400-line norm: the seven small writers sit beside the types they share, so a
format's layout reads in one place.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from inference.data.cric import CSV_COLUMNS as CRIC_COLUMNS
from inference.data.export import COCO_CATEGORIES, PROVENANCE_COLUMNS, SPLITS, slide_stem, yolo_line
from inference.slides import SlideReader, Tile
from inference.types import BETHESDA_CLASSES, CLASS_COLOURS, Box

BoxTuple = tuple[int, int, int, int]  # x, y, width, height


@dataclass(frozen=True)
class ExportCell:
    """A cell of an exported slide, level-0 box; `label` None: left out of the training
    formats (in provenance.csv only)."""

    id: int
    box: BoxTuple
    label: str | None
    pseudo: bool  # the label is the model's (an undecided cell), not a person's
    provenance: dict[str, Any]  # provenance.csv columns of the cell, COCO `attributes`

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2, y + h / 2


@dataclass(frozen=True)
class ExportSlide:
    """One slide as the writers see it: all its cells, and its open reader (for crops)."""

    slide_id: int
    patient: str
    split: str
    mpp: float | None
    cells: list[ExportCell]  # every cell, left-out ones included
    reader: SlideReader

    @property
    def stem(self) -> str:
        return slide_stem(self.slide_id)

    @property
    def kept(self) -> list[ExportCell]:
        """The cells the training formats carry."""
        return [c for c in self.cells if c.label is not None]

    @property
    def rejected(self) -> list[ExportCell]:
        """The calls a person rejected (left out of the labelled formats): hard negatives."""
        return [c for c in self.cells if c.provenance.get("action") == "rejected"]


@dataclass(frozen=True)
class ExportImage:
    """One image of the export: a field, or a tile of a whole-slide image, with the kept
    cells whose centre is inside it."""

    slide: ExportSlide
    name: str  # file stem, unique in the export
    tile: Tile  # where the image is on the slide (level 0)
    pixels: np.ndarray
    cells: list[ExportCell]

    @property
    def file_name(self) -> str:
        """The image's path in the export (YOLO's images, named by COCO)."""
        return f"images/{self.slide.split}/{self.name}.png"

    def boxes(self) -> Iterator[tuple[ExportCell, str, BoxTuple]]:
        """(cell, label, box) of each cell, its box clipped to the image, in image pixels."""
        t = self.tile
        for cell in self.cells:
            x, y, w, h = cell.box
            x0, y0 = max(x, t.x), max(y, t.y)
            x1, y1 = min(x + w, t.x + t.width), min(y + h, t.y + t.height)
            assert cell.label is not None  # only kept cells are in an image
            yield cell, cell.label, (x0 - t.x, y0 - t.y, x1 - x0, y1 - y0)


class FormatWriter:
    """Writes one format. Each hook does nothing unless the format needs it."""

    def add_slide(self, slide: ExportSlide) -> None:
        """Called once per slide, before its images."""

    def add_image(self, image: ExportImage) -> None:
        """Called once per image of the export."""

    def close(self) -> None:
        """Finish the format's files after the last slide (may fail, e.g. on a full disk)."""

    def abort(self) -> None:
        """Release open files, whether or not `close` ran or failed; never raises but OSError."""


def png_write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode {path.name}")
    path.write_bytes(buf.tobytes())


def hex_to_rgb(colour: str) -> list[int]:
    value = colour.lstrip("#")
    return [int(value[i : i + 2], 16) for i in (0, 2, 4)]


# --------------------------------------------------------------------------------------------
# COCO: coco/<split>.json
# --------------------------------------------------------------------------------------------


class JsonArrayFile:
    """Items appended one by one to a temporary file, later copied into a JSON array."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] = path.open("w", encoding="utf-8")
        self.count = 0

    def append(self, item: dict[str, Any]) -> None:
        if self.count:
            self._fh.write(",\n")
        self._fh.write(json.dumps(item, separators=(",", ":")))
        self.count += 1

    def copy_into(self, out: IO[str]) -> None:
        self._fh.close()
        with self.path.open(encoding="utf-8") as fh:
            while chunk := fh.read(1024 * 1024):
                out.write(chunk)
        self.path.unlink()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class CocoFile:
    """One COCO detection file, written image by image (ids from 1)."""

    def __init__(self, path: Path, *, info: dict[str, Any], scratch: Path) -> None:
        """`scratch`: a folder for the two part files (outside the export's own folder)."""
        self.path = path
        self.info = info
        self.images = JsonArrayFile(scratch / f"{path.stem}.images.part")
        self.annotations = JsonArrayFile(scratch / f"{path.stem}.annotations.part")

    def add_image(self, *, file_name: str, width: int, height: int, **extra: Any) -> int:
        image_id = self.images.count + 1
        self.images.append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height, **extra}
        )
        return image_id

    def add_annotation(
        self, *, image_id: int, code: str, bbox: BoxTuple, attributes: dict[str, Any]
    ) -> None:
        x, y, w, h = bbox
        self.annotations.append(
            {
                "id": self.annotations.count + 1,
                "image_id": image_id,
                "category_id": BETHESDA_CLASSES.index(code) + 1,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                "attributes": attributes,
            }
        )

    def close(self) -> None:
        with self.path.open("w", encoding="utf-8") as out:
            out.write('{"info":' + json.dumps(self.info) + ',"licenses":[],')
            out.write('"categories":' + json.dumps(COCO_CATEGORIES) + ',\n"images":[\n')
            self.images.copy_into(out)
            out.write('\n],\n"annotations":[\n')
            self.annotations.copy_into(out)
            out.write("\n]}\n")

    def abort(self) -> None:
        self.images.close()
        self.annotations.close()


class CocoWriter(FormatWriter):
    """coco/<split>.json: an image entry per image (with its place on the slide), an
    annotation per cell with the cell's provenance as `attributes`."""

    def __init__(self, root: Path, *, info: dict[str, Any], scratch: Path) -> None:
        (root / "coco").mkdir(parents=True, exist_ok=True)
        self.files = {
            split: CocoFile(root / "coco" / f"{split}.json", info=info, scratch=scratch)
            for split in SPLITS
        }

    def add_image(self, image: ExportImage) -> None:
        coco = self.files[image.slide.split]
        image_id = coco.add_image(
            file_name=image.file_name,
            width=image.tile.width,
            height=image.tile.height,
            slide_id=image.slide.slide_id,
            patient=image.slide.patient,
            origin_x=image.tile.x,
            origin_y=image.tile.y,
            mpp=image.slide.mpp,
        )
        for cell, label, bbox in image.boxes():
            coco.add_annotation(
                image_id=image_id, code=label, bbox=bbox, attributes=cell.provenance
            )

    def close(self) -> None:
        for coco in self.files.values():
            coco.close()

    def abort(self) -> None:
        for coco in self.files.values():
            coco.abort()


# --------------------------------------------------------------------------------------------
# The other formats
# --------------------------------------------------------------------------------------------


class YoloWriter(FormatWriter):
    """images/<split>/<name>.png, labels/<split>/<name>.txt (one line per cell) and data.yaml."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add_image(self, image: ExportImage) -> None:
        png_write(self.root / image.file_name, image.pixels)
        w, h = image.tile.width, image.tile.height
        lines = [yolo_line(label, Box(*bbox), w, h) for _, label, bbox in image.boxes()]
        path = self.root / "labels" / image.slide.split / f"{image.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))

    def close(self) -> None:
        """data.yaml, the Ultralytics dataset file; paths relative to the unpacked export."""
        lines = ["# PapReview export: YOLO detection dataset", "path: ."]
        lines += [f"{split}: images/{split}" for split in SPLITS]
        lines.append("names:")
        lines += [f"  {i}: {code}" for i, code in enumerate(BETHESDA_CLASSES)]
        (self.root / "data.yaml").write_text("\n".join(lines) + "\n")


class PointsWriter(FormatWriter):
    """points/<split>.csv: cell centres in the CRIC cells-table format (`inference.data.cric`),
    image_filename,nucleus_x,nucleus_y,bethesda_system; the point annotations of stage 1."""

    def __init__(self, root: Path) -> None:
        (root / "points").mkdir(parents=True, exist_ok=True)
        self._files = {
            split: (root / "points" / f"{split}.csv").open("w", newline="", encoding="utf-8")
            for split in SPLITS
        }
        self._writers = {split: csv.writer(fh) for split, fh in self._files.items()}
        for writer in self._writers.values():
            writer.writerow(CRIC_COLUMNS)

    def add_image(self, image: ExportImage) -> None:
        writer = self._writers[image.slide.split]
        for cell in image.cells:
            cx, cy = cell.centre
            x, y = cx - image.tile.x, cy - image.tile.y
            writer.writerow([f"{image.name}.png", f"{x:.1f}", f"{y:.1f}", cell.label])

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()

    abort = close  # closing a closed file does nothing


class CropsWriter(FormatWriter):
    """crops/<split>/<class>/<slide>_c<cell>[_pseudo].png: a size x size level-0 crop around
    each kept cell (ImageFolder layout for the classifier); areas outside the slide are white.
    rejected/<split>/<slide>_c<cell>.png: the same crop of each call a person rejected (outside
    the ImageFolder: no Bethesda class), which stage 2's training takes as a hard negative."""

    def __init__(self, root: Path, *, size: int) -> None:
        self.root = root
        self.size = size

    def add_slide(self, slide: ExportSlide) -> None:
        for cell in slide.kept:
            # A pseudo-label's crop says so in its name (its class is the model's, not a person's).
            mark = "_pseudo" if cell.pseudo else ""
            folder = self.root / "crops" / slide.split / str(cell.label)
            png_write(folder / f"{slide.stem}_c{cell.id}{mark}.png", self._crop(slide, cell))
        for cell in slide.rejected:
            folder = self.root / "rejected" / slide.split
            png_write(folder / f"{slide.stem}_c{cell.id}.png", self._crop(slide, cell))

    def _crop(self, slide: ExportSlide, cell: ExportCell) -> np.ndarray:
        half = self.size // 2
        cx, cy = cell.centre
        x, y = round(cx) - half, round(cy) - half
        return np.asarray(slide.reader.read_region((x, y), 0, (self.size, self.size)))


class GeoJsonWriter(FormatWriter):
    """geojson/<slide>.geojson: a QuPath-compatible FeatureCollection of the slide's kept cells,
    one rectangle Polygon each in level-0 pixels; classification name and colour as QuPath reads
    them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add_slide(self, slide: ExportSlide) -> None:
        features = []
        for cell in slide.kept:
            x, y, w, h = cell.box
            code = str(cell.label)
            features.append(
                {
                    "type": "Feature",
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"papreview:cell:{cell.id}")),
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]],
                    },
                    "properties": {
                        "objectType": "annotation",
                        "name": f"cell {cell.id}",
                        "classification": {"name": code, "color": hex_to_rgb(CLASS_COLOURS[code])},
                        "isLocked": False,
                    },
                }
            )
        path = self.root / "geojson" / f"{slide.stem}.geojson"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


class ProvenanceWriter(FormatWriter):
    """provenance.csv: a row per cell of every exported slide, left-out cells included."""

    def __init__(self, root: Path) -> None:
        self._fh = (root / "provenance.csv").open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=list(PROVENANCE_COLUMNS))
        self._writer.writeheader()

    def add_slide(self, slide: ExportSlide) -> None:
        for cell in slide.cells:
            x, y, w, h = cell.box
            row = {
                **cell.provenance,
                "slide_id": slide.slide_id,
                "patient": slide.patient,
                "split": slide.split,
                "x": x,
                "y": y,
                "width": w,
                "height": h,
            }
            self._writer.writerow(
                {k: "" if row.get(k) is None else row[k] for k in PROVENANCE_COLUMNS}
            )

    def close(self) -> None:
        self._fh.close()

    abort = close  # closing a closed file does nothing


def format_writers(
    root: Path, *, info: dict[str, Any], scratch: Path, crop_size: int
) -> list[FormatWriter]:
    """A writer for each format of an export into `root` (`scratch`: a folder for part files,
    outside `root`)."""
    return [
        ProvenanceWriter(root),
        GeoJsonWriter(root),
        CocoWriter(root, info=info, scratch=scratch),
        YoloWriter(root),
        PointsWriter(root),
        CropsWriter(root, size=crop_size),
    ]
