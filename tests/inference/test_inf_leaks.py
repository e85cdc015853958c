"""No leak, ever: images are identified by the SHA-256 of their file; `--merge-base` drops the
base images that are in the export (the export's split wins); training refuses a validation or
test image that is also a training image, whatever the sources. Synthetic data only."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.__main__ import main as inference_main
from inference.data.cric import load_split
from inference.data.export import COCO_CATEGORIES, MANIFEST, Export, export_patches
from inference.data.inputs import detector_data, plan
from inference.data.leaks import LeakError, file_sha256, record_of, trained_on_warnings
from inference.train import CellPatches, FieldSample, train_classifier, train_detector

CLASSES = ["NILM", "HSIL", "LSIL", "SCC"]


def png(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_export(root: Path, slides: list[tuple[int, str, bytes]], *, per_image: bool = True):
    """A minimal export folder: per slide (id, split, uploaded file bytes) one field image with
    two cells, their crops, COCO files and a manifest with checksums."""
    coco: dict[str, dict] = {
        s: {"images": [], "annotations": [], "categories": COCO_CATEGORIES}
        for s in ("train", "val", "test")
    }
    images: dict[str, dict] = {}
    for sid, split, data in slides:
        name = f"images/{split}/s{sid:06d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        w, h = Image.open(io.BytesIO(data)).size
        c = coco[split]
        image_id = len(c["images"]) + 1
        c["images"].append(
            {"id": image_id, "file_name": name, "width": w, "height": h, "slide_id": sid}
        )
        for k in range(2):
            code = CLASSES[(sid + k) % 4]
            c["annotations"].append(
                {
                    "id": len(c["annotations"]) + 1,
                    "image_id": image_id,
                    "bbox": [10 + 40 * k, 20, 16, 16],
                    "category_id": COCO_CATEGORIES[
                        [x["name"] for x in COCO_CATEGORIES].index(code)
                    ]["id"],
                }
            )
            crop = root / "crops" / split / code / f"s{sid:06d}_c{10 * sid + k}.png"
            crop.parent.mkdir(parents=True, exist_ok=True)
            crop.write_bytes(png(1000 + 10 * sid + k, (24, 24)))
        images[name] = {
            "slide_id": sid,
            "sha256": hashlib.sha256(data).hexdigest(),
            "origin": [0, 0],
        }
    (root / "coco").mkdir(parents=True, exist_ok=True)
    for split, c in coco.items():
        (root / "coco" / f"{split}.json").write_text(json.dumps(c))
    files = {
        p.relative_to(root).as_posix(): file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    manifest = {
        "format": "papreview-export",
        "format_version": 1,
        "name": "leaks",
        "version": 1,
        "export_id": 7,
        "split": {},
        "slides": [
            {"id": sid, "split": split, "sha256": hashlib.sha256(data).hexdigest()}
            for sid, split, data in slides
        ],
        "counts": {},
        "files": files,
    }
    if per_image:
        manifest["images"] = images
    (root / MANIFEST).write_text(json.dumps(manifest))
    return root


def write_cric(root: Path, files: list[bytes]) -> Path:
    """A CRIC-shaped folder (cells.csv + images/c<i>.png, two cells each)."""
    images = root / "cric" / "images"
    images.mkdir(parents=True)
    with (root / "cric" / "cells.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_filename", "nucleus_x", "nucleus_y", "bethesda_system"])
        for i, data in enumerate(files):
            (images / f"c{i}.png").write_bytes(data)
            for k in range(2):
                w.writerow([f"c{i}.png", 20 + 40 * k, 30, CLASSES[(i + k) % 4]])
    return root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_export_reader_gives_every_image_and_crop_its_source_sha256(tmp_path) -> None:
    a, b = png(1), png(2)
    root = write_export(tmp_path / "x", [(1, "train", a), (2, "val", b)])
    ex = Export.open(root)
    assert ex.verify() == []
    [im] = ex.images("train")
    assert im.source_sha256 == sha(a) and im.origin == (0, 0)
    assert [r.sha256 for r in ex.refs("val")] == [sha(b)]
    patches = export_patches(ex, "val", 24)
    assert patches.image_sha256 == [sha(b)] * 2
    assert patches.image_names[0].startswith("crops/val/")
    # an export without the per-image entries: the slide's SHA-256 still identifies its images
    old = write_export(tmp_path / "old", [(1, "train", a)], per_image=False)
    assert Export.open(old).images("train")[0].source_sha256 == sha(a)


def test_merge_base_drops_base_images_in_the_export_and_keeps_the_export_split(tmp_path) -> None:
    shared = png(5)  # the same field: export slide 2 (val) and base image c0
    root = write_export(
        tmp_path / "x", [(1, "train", png(4)), (2, "val", shared), (3, "test", png(6))]
    )
    base = write_cric(tmp_path / "base", [shared, *(png(100 + i) for i in range(6))])
    p = plan(Export.open(root), merge_base=True, data_dir=base, split_seed=1, log=lambda m: None)
    assert p.dropped == ["c0.png"]
    assert all("c0.png" not in names for names in p.base_split.values())
    assert p.meta["merged_with"]["dropped_in_export"] == 1
    assert all("c0.png" not in names for names in p.meta["merged_with"]["split"].values())
    record = p.meta["images_sha256"]
    assert sha(shared) in record["val"] and sha(shared) not in record["train"]
    assert len(record["train"]) == 1 + len(p.base_split["train"])
    logged: list[str] = []
    train, val, meta = detector_data(root, scale=1.0, merge_base=True, data_dir=base)
    assert [f.name for f in val if f.sha256 == sha(shared)] == ["images/val/s000002.png"]
    assert all(f.sha256 != sha(shared) for f in train)
    assert meta["merged_with"]["dropped_images"] == ["c0.png"]
    plan(Export.open(root), merge_base=True, data_dir=base, log=logged.append)
    assert "dropped 1 of 7 base images" in logged[0]


def test_training_refuses_a_validation_image_that_is_a_training_image(tmp_path, capsys) -> None:
    same = png(9)  # one field uploaded twice, for two patients: once in train, once in val
    root = write_export(
        tmp_path / "x", [(1, "train", same), (2, "train", png(3)), (4, "val", same)]
    )
    for stage in ("train-detector", "train-classifier"):
        code = inference_main([stage, "--data", str(root), "--out", str(tmp_path / stage)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert err.startswith("error: refusing to train: 1 validation/test image is also")
        assert "first: images/val/s000004.png (val) = images/train/s000001.png (train)" in err
        assert not (tmp_path / stage).exists()


def test_the_base_split_is_refused_when_a_val_or_test_image_is_a_training_image(
    tmp_path,
) -> None:
    base = write_cric(tmp_path / "base", [png(1)] * 12)  # twelve copies of one image
    with pytest.raises(LeakError, match=r"refusing to train: \d+ validation/test images are"):
        load_split(base, 2021)


def test_in_memory_training_refuses_shared_images() -> None:
    img = np.full((64, 64, 3), 200, np.uint8)
    pts = np.array([[32.0, 32.0]])
    a = FieldSample("a.png", img, pts, ["HSIL"], 1.0, "ab" * 32)
    b = FieldSample("b.png", img, pts, ["HSIL"], 1.0, "ab" * 32)
    with pytest.raises(LeakError, match=r"1 validation/test image is .* first: b\.png \(val\)"):
        train_detector([a], [b], epochs=1)
    patches = CellPatches(
        np.zeros((2, 48, 48, 3), np.uint8), np.array([0, 4]), ["t.png", "t.png"], ["cd" * 32] * 2
    )
    val = CellPatches(np.zeros((1, 48, 48, 3), np.uint8), np.array([4]), ["v.png"], ["cd" * 32])
    with pytest.raises(LeakError, match=r"first: v\.png \(val\) = t\.png \(train\)"):
        train_classifier(patches, val, epochs=1)


def test_evaluation_warnings_count_the_scored_images_a_model_was_trained_on() -> None:
    from inference.data.leaks import ImageRef

    meta = {"data": {"images_sha256": {"train": ["a", "b"], "val": ["c"]}}}
    record = record_of(meta)
    refs = [ImageRef(h, f"{h}.png") for h in ("a", "c", "z")]
    warnings = trained_on_warnings(record, refs, "test")
    assert warnings[0].startswith("This version was trained on 1 of the 3 test images")
    assert "selected and calibrated on 1 of the 3" in warnings[1]
    assert trained_on_warnings(record, [ImageRef("z", "z.png")], "test") == []
    assert record_of({"data": {}}) is None
    assert "not recorded" in trained_on_warnings(None, refs, "test")[0]


def test_export_crops_keep_their_scale_cut_or_padded_to_the_patch() -> None:
    """A crop of another size than the classifier's patch is cut or padded around its centre,
    never resized: a nucleus keeps its size in pixels whatever the export's crop size."""
    from inference.slides import centred_patch

    big = np.zeros((40, 40, 3), np.uint8)
    big[18:22, 18:22] = 200  # a 4 px "nucleus" at the centre
    cut = centred_patch(big, 20)
    assert cut.shape == (20, 20, 3) and (cut == 200).all(axis=2).sum() == 16
    assert (cut[8:12, 8:12] == 200).all()
    small = np.full((10, 10, 3), 7, np.uint8)
    padded = centred_patch(small, 20)
    assert (padded[5:15, 5:15] == 7).all() and (padded[:5] == 255).all()
    assert (padded == 7).all(axis=2).sum() == 100
