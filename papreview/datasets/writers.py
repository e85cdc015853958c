"""Streaming writers for the export formats (files on disk, never the whole set in memory).

The layout and the label conventions come from `inference.data.export` (the reader), so the
writer and the reader cannot drift apart.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from inference.data.cric import CSV_COLUMNS as CRIC_COLUMNS
from inference.data.export import COCO_CATEGORIES, PROVENANCE_COLUMNS, SPLITS
from inference.types import BETHESDA_CLASSES, CLASS_COLOURS


def hex_to_rgb(colour: str) -> list[int]:
    value = colour.lstrip("#")
    return [int(value[i : i + 2], 16) for i in (0, 2, 4)]


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


class CocoWriter:
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
        self,
        *,
        image_id: int,
        code: str,
        bbox: tuple[int, int, int, int],
        attributes: dict[str, Any],
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


def write_geojson(path: Path, cells: Iterable[tuple[int, str, tuple[int, int, int, int]]]) -> int:
    """A QuPath-compatible FeatureCollection: one rectangle Polygon per (cell id, class, box),
    in level-0 pixels; classification name and colour as QuPath reads them."""
    features = []
    for cell_id, code, (x, y, w, h) in cells:
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"papreview:cell:{cell_id}")),
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]],
                },
                "properties": {
                    "objectType": "annotation",
                    "name": f"cell {cell_id}",
                    "classification": {"name": code, "color": hex_to_rgb(CLASS_COLOURS[code])},
                    "isLocked": False,
                },
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return len(features)


class ProvenanceWriter:
    def __init__(self, path: Path) -> None:
        self._fh = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=list(PROVENANCE_COLUMNS))
        self._writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({k: "" if row.get(k) is None else row[k] for k in PROVENANCE_COLUMNS})

    def close(self) -> None:
        self._fh.close()


def data_yaml() -> str:
    """The YOLO (Ultralytics) dataset file; paths relative to the unpacked export."""
    lines = ["# PapReview export: YOLO detection dataset", "path: ."]
    lines += [f"{split}: images/{split}" for split in SPLITS]
    lines.append("names:")
    lines += [f"  {i}: {code}" for i, code in enumerate(BETHESDA_CLASSES)]
    return "\n".join(lines) + "\n"


class PointsWriter:
    """Cell centres of one split in the CRIC cells-table format (`inference.data.cric`):
    image_filename,nucleus_x,nucleus_y,bethesda_system; the point annotations of stage 1."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(CRIC_COLUMNS)

    def write(self, image: str, x: float, y: float, code: str) -> None:
        self._writer.writerow([image, f"{x:.1f}", f"{y:.1f}", code])

    def close(self) -> None:
        self._fh.close()
