"""Dataset exports: built by the task function from real reviewed slides, then read back with
pycocotools and the project's own reader (inference.data.export)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from pycocotools.coco import COCO

from inference.data.cric import read_cells_csv
from inference.data.export import (
    Export,
    export_fields,
    export_patches,
    read_yolo_labels,
    slide_stem,
)
from inference.slides import tile_grid
from inference.types import BETHESDA_CLASSES, CLASS_COLOURS, NOT_A_CELL, STAGE2_CLASSES
from papreview.core.exceptions import ConflictError
from papreview.datasets.build import dataset_export_build
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.datasets.params import ExportParams, SplitRefusedError, patient_split
from papreview.datasets.services import (
    EmptyExportError,
    dataset_export_create,
    dataset_export_requeue,
)
from papreview.review.models import ReviewStatus
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

YOLO_LINE = re.compile(r"^[0-5] (0|1)\.\d{6} (0|1)\.\d{6} (0|1)\.\d{6} (0|1)\.\d{6}$")


def unpack(export: DatasetExport, dest: Path) -> Path:
    with zipfile.ZipFile(default_storage.path(str(export.file.name))) as zf:
        zf.extractall(dest)
    return dest


def build(name: str, user, **params) -> DatasetExport:
    export = dataset_export_create(name=name, created_by=user, params=params)
    assert dataset_export_build(export_id=export.pk) == "ready"
    export.refresh_from_db()
    return export


@pytest.fixture
def reviewed(make_slide):
    """Three patients, four field slides (one without any cell), every review action."""
    p1, p2, p3 = (PatientFactory.create(identifier=f"PT-{i}") for i in range(3))
    slides = [
        make_slide(
            p1,
            seed=1,
            cells=[
                (10, 12, 40, 36, "HSIL", "undecided"),
                (80, 40, 30, 30, "LSIL", "confirmed"),
                (150, 100, 44, 40, "ASC-US", "relabelled", "LSIL"),
                (30, 120, 30, 30, "NILM", "rejected"),
            ],
        ),
        make_slide(
            p1,
            seed=2,
            cells=[(60, 60, 50, 40, "SCC", "moved"), (170, 20, 30, 30, "ASC-H", "added")],
        ),
        make_slide(p2, seed=3, cells=[(100, 100, 40, 40, "NILM", "undecided")], category="NILM"),
        make_slide(p3, seed=4, cells=[], category="NILM"),
    ]
    return slides


def test_export_round_trip_with_pycocotools_and_the_project_reader(reviewed, pathologist, tmp_path):
    export = build("round trip", pathologist, crop_size=48)
    assert export.status == ExportStatus.READY and export.progress == 100
    assert export.slide_count == 4 and export.slides_done == 4
    zip_path = Path(default_storage.path(str(export.file.name)))
    assert hashlib.sha256(zip_path.read_bytes()).hexdigest() == export.sha256
    root = unpack(export, tmp_path / "x")
    ex = Export.open(root)
    assert ex.verify() == []

    # Expected: every decided, non-rejected cell with its final class and box, per slide, and
    # the undecided cells of the NILM slide as NILM; the undecided HSIL cell of an HSIL slide
    # is left out of the training formats (nobody decided it).
    expected: dict[int, Counter] = {}
    for r in reviewed:
        slide = r.slide
        cells = slide.cells.exclude(review_status=ReviewStatus.REJECTED)
        if slide.interpretation.bethesda_category != "NILM":
            cells = cells.exclude(review_status=ReviewStatus.PREDICTED)
        expected[slide.pk] = Counter(
            (c.current_class, (c.x, c.y, c.width, c.height)) for c in cells
        )
    assert export.cell_count == sum(sum(c.values()) for c in expected.values()) == 5

    seen: dict[int, Counter] = {}
    images_seen = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(ex.coco_path(split)))
        cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
        assert [cats[i] for i in sorted(cats)] == list(BETHESDA_CLASSES)
        ours = {im.file_name: im for im in ex.images(split)}
        assert len(ours) == len(coco.getImgIds())
        for img in coco.loadImgs(coco.getImgIds()):
            images_seen += 1
            assert (root / img["file_name"]).is_file()
            assert (img["width"], img["height"]) == (256, 192)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            got = Counter((cats[a["category_id"]], tuple(int(v) for v in a["bbox"])) for a in anns)
            seen.setdefault(img["slide_id"], Counter()).update(got)
            # the project's reader sees the same boxes and classes
            mine = ours[img["file_name"]]
            assert (
                Counter(
                    (a.label, (a.box.x, a.box.y, a.box.width, a.box.height))
                    for a in mine.annotations
                )
                == got
            )
        fields = export_fields(ex, split)
        assert sum(len(f.points) for f in fields) == len(coco.getAnnIds())
        # the point annotations read by the CRIC reader: same images, classes and centres
        points = read_cells_csv(ex.points_path(split))
        for name, im in ours.items():
            table = points.get(Path(name).name)
            got_points = sorted((c.label, c.x, c.y) for c in table.cells) if table else []
            assert got_points == sorted(
                (a.label, a.box.x + a.box.width / 2, a.box.y + a.box.height / 2)
                for a in im.annotations
            )
    assert images_seen == 4  # the slide with no cells is kept as a negative image
    assert {k: v for k, v in seen.items() if v} == {k: v for k, v in expected.items() if v}

    # Provenance: every cell (the rejected one too), in the CSV and as COCO attributes.
    rows = {int(r["cell_id"]): r for r in ex.provenance()}
    assert len(rows) == 7
    assert Counter(r["action"] for r in rows.values()) == {
        "undecided": 2,  # left as predicted: sign-out decides nothing
        "accepted": 1,  # explicitly confirmed
        "relabelled": 1,
        "moved": 1,
        "rejected": 1,
        "added": 1,
    }
    assert Counter(r["label_source"] for r in rows.values()) == {
        "decided": 5,
        "undecided": 1,  # on the HSIL slide: in provenance.csv only
        "implied_by_nilm_signout": 1,  # on the NILM slide: NILM
    }
    nilm_cell = reviewed[2].cells["undecided-0"]
    assert (rows[nilm_cell.pk]["final_class"], rows[nilm_cell.pk]["reviewer"]) == ("NILM", "")
    for key, cell in reviewed[0].cells.items():
        row = rows[cell.pk]
        assert row["predicted_class"] == cell.predicted_class
        assert row["detector_version"] == "det-A" and row["classifier_version"] == "cls-A"
        if key.startswith("undecided"):
            # Nobody decided it: no reviewer, no final class, never "accepted".
            assert (row["action"], row["reviewer"], row["final_class"]) == ("undecided", "", "")
            continue
        assert row["reviewer"] == pathologist.username
        if key.startswith("relabelled"):
            assert (row["action"], row["final_class"]) == ("relabelled", "LSIL")
            assert float(row["predicted_score"]) == pytest.approx(0.75)
        if key.startswith("rejected"):
            assert (row["action"], row["final_class"]) == ("rejected", "")
    added = reviewed[1].cells["added-1"]
    assert rows[added.pk]["action"] == "added" and rows[added.pk]["predicted_class"] == ""
    moved = reviewed[1].cells["moved-0"]
    assert rows[moved.pk]["action"] == "moved"
    split_of_slide = {s["id"]: s["split"] for s in ex.manifest["slides"]}
    coco = COCO(str(ex.coco_path(split_of_slide[reviewed[1].slide.pk])))
    attrs = {a["attributes"]["cell_id"]: a["attributes"] for a in coco.dataset["annotations"]}
    assert attrs[moved.pk]["action"] == "moved"
    assert attrs[moved.pk]["classifier_version"] == "cls-A"
    assert attrs[added.pk]["action"] == "added"

    # ImageFolder crops: one per kept cell, in its class folder, of the set size.
    crops = [c for split in ("train", "val", "test") for c in ex.crops(split)]
    assert Counter(code for _, code in crops) == Counter(
        code for c in expected.values() for code, _ in c.elements()
    )
    # The rejected call: a crop apart (rejected/<split>/, no Bethesda class), taught to stage 2
    # as a hard negative (NILM) after the split's labelled crops.
    first_split = split_of_slide[reviewed[0].slide.pk]
    rejected = reviewed[0].cells["rejected-3"]
    crop_name = f"{slide_stem(reviewed[0].slide.pk)}_c{rejected.pk}.png"
    assert [p.name for s in ("train", "val", "test") for p in ex.rejected(s)] == [crop_name]
    assert ex.manifest["counts"]["rejected_crops"][first_split] == 1
    patches = export_patches(ex, first_split, 48)
    assert patches.images.shape[1:] == (48, 48, 3)
    assert patches.image_names[-1] == f"rejected/{first_split}/{crop_name}"
    assert BETHESDA_CLASSES[patches.labels[-1]] == "NILM"
    assert len(patches.labels) == len(ex.crops(first_split)) + 1
    # for a classifier with the not-a-cell outcome (what retraining of one asks), as that
    not_cells = export_patches(ex, first_split, 48, rejected_label=NOT_A_CELL)
    assert STAGE2_CLASSES[not_cells.labels[-1]] == NOT_A_CELL
    assert (not_cells.labels[:-1] == patches.labels[:-1]).all()


def test_undecided_predictions_only_as_marked_pseudo_labels_when_asked(
    reviewed, pathologist, tmp_path
):
    undecided_hsil = reviewed[0].cells["undecided-0"]
    plain = Export.open(unpack(build("no pseudo", pathologist), tmp_path / "a"))
    assert undecided_hsil.pk not in {
        a["attributes"]["cell_id"]
        for split in ("train", "val", "test")
        for a in json.loads(plain.coco_path(split).read_text())["annotations"]
    }
    export = build("pseudo", pathologist, include_undecided=True)
    assert export.manifest["params"]["include_undecided"] is True
    assert export.manifest["counts"]["label_sources"]["pseudo_label"] == 1
    ex = Export.open(unpack(export, tmp_path / "b"))
    rows = {int(r["cell_id"]): r for r in ex.provenance()}
    row = rows[undecided_hsil.pk]
    assert (row["action"], row["label_source"], row["final_class"], row["reviewer"]) == (
        "undecided",
        "pseudo_label",
        "HSIL",
        "",
    )
    attrs = [
        a["attributes"]
        for split in ("train", "val", "test")
        for a in json.loads(ex.coco_path(split).read_text())["annotations"]
        if a["attributes"]["cell_id"] == undecided_hsil.pk
    ]
    assert [a["label_source"] for a in attrs] == ["pseudo_label"]
    crops = [
        p.name for p in (ex.root / "crops").rglob("*.png") if f"_c{undecided_hsil.pk}" in p.name
    ]
    assert crops == [f"s{reviewed[0].slide.pk:06d}_c{undecided_hsil.pk}_pseudo.png"]


def test_every_image_is_identified_by_the_sha256_of_its_slide_file(reviewed, pathologist, tmp_path):
    export = build("identity", pathologist)
    ex = Export.open(unpack(export, tmp_path / "x"))
    by_slide = {r.slide.pk: r.slide.sha256 for r in reviewed}
    seen = []
    for split in ("train", "val", "test"):
        for im in ex.images(split):
            assert im.source_sha256 == by_slide[im.slide_id]  # a field: its uploaded file's
            assert export.manifest["images"][im.file_name]["sha256"] == by_slide[im.slide_id]
            seen.append(im.slide_id)
        assert [r.sha256 for r in ex.refs(split)] == [
            by_slide[im.slide_id] for im in ex.images(split)
        ]
        patches = export_patches(ex, split, 32)
        assert len(patches.image_sha256) == len(patches.labels)
        assert set(patches.image_sha256) <= set(by_slide.values())
    listed = sorted(v["slide_id"] for v in export.manifest["images"].values())
    assert sorted(seen) == sorted(by_slide) == listed


def test_split_is_by_patient_and_manifest_counts(reviewed, pathologist, tmp_path):
    export = build("split", pathologist)
    m = export.manifest
    assert set(m["split"]) == {"train", "val", "test"}
    assert all(m["split"][s] for s in ("train", "val", "test"))  # 3 patients: one each
    patients = [p for s in m["split"].values() for p in s]
    assert sorted(patients) == ["PT-0", "PT-1", "PT-2"]
    for slide in m["slides"]:
        assert slide["patient"] in m["split"][slide["split"]]
    assert m["counts"]["per_class"]["LSIL"] == 2  # confirmed + relabelled to LSIL
    assert m["counts"]["actions"]["rejected"] == 1
    assert m["model_versions"] == [
        {"stage": "classifier", "name": "cls-A", "sha256": None},  # factory rows have no file
        {"stage": "detector", "name": "det-A", "sha256": None},
    ]
    assert m["exported_by"] == pathologist.username and m["created_at"]
    # patient_split: deterministic, and all slides of a patient together
    a = patient_split([f"p{i}" for i in range(20)], fractions=(0.7, 0.15, 0.15), seed=3)
    assert a == patient_split(
        [f"p{i}" for i in range(20)][::-1], fractions=(0.7, 0.15, 0.15), seed=3
    )
    assert Counter(a.values()) == {"train": 14, "val": 3, "test": 3}


@pytest.mark.parametrize(
    "n, fractions, expected",
    [
        (3, (0.7, 0.15, 0.15), {"train": 1, "val": 1, "test": 1}),
        (4, (0.7, 0.15, 0.15), {"train": 2, "val": 1, "test": 1}),
        # rounding up must not take the last train patient, nor empty val
        (3, (0.01, 0.01, 0.98), {"train": 1, "val": 1, "test": 1}),
        (5, (0.0, 0.01, 0.99), {"val": 1, "test": 4}),
        (2, (1.0, 0.0, 0.0), {"train": 2}),  # train-only
        (1, (1.0, 0.0, 0.0), {"train": 1}),
    ],
)
def test_patient_split_keeps_val_and_test_filled(n, fractions, expected):
    split = patient_split([f"p{i}" for i in range(n)], fractions=fractions, seed=1)
    assert Counter(split.values()) == expected


@pytest.mark.parametrize("n", [0, 1, 2])
def test_patient_split_refuses_fewer_than_three_patients(n):
    with pytest.raises(SplitRefusedError, match=f"{n} patient"):
        patient_split([f"p{i}" for i in range(n)], fractions=(0.7, 0.15, 0.15), seed=0)


def test_train_only_params_and_empty_val_or_test_fractions():
    assert ExportParams(train_only=True).split == (1.0, 0.0, 0.0)
    assert ExportParams.from_dict({"train_only": True, "split": [0.5, 0.25, 0.25]}).split == (
        1.0,
        0.0,
        0.0,
    )
    for split in ([0.8, 0.2, 0.0], [0.8, 0.0, 0.2]):
        with pytest.raises(ValidationError, match="train-only") as err:
            ExportParams.from_dict({"split": split})
        assert "split" in err.value.message_dict
    assert ExportParams.from_dict({"split": [0.8, 0.0, 0.2], "train_only": True}).train_only
    with pytest.raises(ValidationError):
        ExportParams.from_dict({"split": [0.5, 2.0, 0.5]})


def test_train_only_export_puts_every_patient_in_train(make_slide, pathologist):
    make_slide(
        PatientFactory.create(identifier="SOLO"), cells=[(10, 10, 30, 30, "HSIL", "accepted")]
    )
    with pytest.raises(SplitRefusedError) as refused:
        dataset_export_create(name="solo", created_by=pathologist)
    assert refused.value.extra == {"patients": 1, "needed": 3}
    export = build("solo", pathologist, train_only=True)
    m = export.manifest
    assert m["split"] == {"train": ["SOLO"], "val": [], "test": []}
    assert m["params"]["train_only"] is True and m["params"]["split"] == [1.0, 0.0, 0.0]


def test_manifest_checksums_verify_and_detect_tampering(reviewed, pathologist, tmp_path):
    export = build("checksums", pathologist)
    root = unpack(export, tmp_path / "x")
    manifest = json.loads((root / "manifest.json").read_text())
    files = [p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert sorted(manifest["files"]) == sorted(p.relative_to(root).as_posix() for p in files)
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest
    assert manifest == export.manifest
    target = next(p for p in files if p.suffix == ".txt")
    target.write_text(target.read_text() + "0 0.5 0.5 0.1 0.1\n")
    (root / "stray.txt").write_text("x")
    problems = Export.open(root).verify()
    rel = target.relative_to(root).as_posix()
    assert problems == [f"checksum differs: {rel}", "not in the manifest: stray.txt"]


def test_yolo_labels_and_data_yaml(reviewed, pathologist, tmp_path):
    export = build("yolo", pathologist)
    root = unpack(export, tmp_path / "x")
    yaml_text = (root / "data.yaml").read_text()
    assert "train: images/train" in yaml_text and "  5: SCC" in yaml_text
    ex = Export.open(root)
    n_labels = 0
    for split in ("train", "val", "test"):
        for im in ex.images(split):
            label_path = root / "labels" / split / (Path(im.file_name).stem + ".txt")
            assert label_path.is_file()  # an empty file for an image without cells
            text = label_path.read_text()
            for line in text.splitlines():
                assert YOLO_LINE.match(line), line
            labels = read_yolo_labels(label_path)
            assert len(labels) == len(im.annotations)
            for lab, ann in zip(
                sorted(labels, key=lambda v: (v.cx, v.cy)),
                sorted(im.annotations, key=lambda a: a.box.centre),
                strict=True,
            ):
                assert lab.code == ann.label
                x, y, w, h = lab.box(im.width, im.height)
                assert (x, y, w, h) == pytest.approx(
                    (ann.box.x, ann.box.y, ann.box.width, ann.box.height), abs=0.01
                )
            n_labels += len(labels)
    assert n_labels == 5  # decided, not rejected, plus the NILM slide's undecided cell


def test_geojson_is_qupath_compatible(reviewed, pathologist, tmp_path):
    export = build("geojson", pathologist)
    root = unpack(export, tmp_path / "x")
    for entry in export.manifest["slides"]:
        data = json.loads((root / entry["geojson"]).read_text())
        assert data["type"] == "FeatureCollection"
        assert len(data["features"]) == entry["cells"]
        for feature in data["features"]:
            assert feature["type"] == "Feature"
            geometry = feature["geometry"]
            assert geometry["type"] == "Polygon"
            ring = geometry["coordinates"][0]
            assert len(ring) == 5 and ring[0] == ring[-1]
            props = feature["properties"]
            assert props["objectType"] == "annotation"
            name = props["classification"]["name"]
            colour = CLASS_COLOURS[name].lstrip("#")
            assert props["classification"]["color"] == [
                int(colour[i : i + 2], 16) for i in (0, 2, 4)
            ]
    first = reviewed[0]
    kept = first.slide.cells.exclude(
        review_status__in=[ReviewStatus.REJECTED, ReviewStatus.PREDICTED]
    )
    data = json.loads((root / f"geojson/s{first.slide.pk:06d}.geojson").read_text())
    boxes = sorted(
        (f["properties"]["classification"]["name"], tuple(f["geometry"]["coordinates"][0][0]))
        for f in data["features"]
    )
    assert boxes == sorted((c.current_class, (c.x, c.y)) for c in kept)


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_whole_slide_images_are_tiled_with_empty_tiles_at_the_set_ratio(
    make_slide, pathologist, tmp_path, ratio
):
    # 1100 x 700 px, tiles of 512 with 64 overlap: starts 0, 448, 588 (x) and 0, 188 (y).
    # Cells sit where only one tile holds their centre.
    r = make_slide(
        wsi=True,
        size=(1100, 700),
        cells=[
            (100, 60, 40, 40, "HSIL", "accepted"),  # tile (0, 0)
            (1000, 600, 40, 40, "LSIL", "accepted"),  # tile (588, 188)
        ],
    )
    export = build(
        f"wsi {ratio}",
        pathologist,
        tile_size=512,
        tile_overlap=64,
        empty_tile_ratio=ratio,
        train_only=True,  # one patient
    )
    root = unpack(export, tmp_path / "x")
    ex = Export.open(root)
    assert ex.verify() == []
    grid = tile_grid(1100, 700, tile=512, overlap=64)
    split = export.manifest["slides"][0]["split"]
    images = ex.images(split)
    with_cells = [im for im in images if im.annotations]
    assert len(with_cells) == 2
    assert len(images) == (len(grid) if ratio == 1.0 else 2)
    assert export.manifest["counts"]["empty_images"][split] == len(images) - 2
    level0 = sorted(
        (a.label, (im.origin[0] + a.box.x, im.origin[1] + a.box.y, a.box.width, a.box.height))
        for im in with_cells
        for a in im.annotations
    )
    cells = r.slide.cells.all()
    assert level0 == sorted((c.current_class, (c.x, c.y, c.width, c.height)) for c in cells)
    for im in images:
        assert (im.width, im.height) in {(t.width, t.height) for t in grid}
        assert (root / im.file_name).is_file()
        # a tile is identified by its slide's file and its place on the slide
        assert im.source_sha256 == r.slide.sha256
        entry = export.manifest["images"][im.file_name]
        assert entry == {"slide_id": r.slide.pk, "sha256": r.slide.sha256, "origin": [*im.origin]}


def test_create_checks_role_filter_and_numbers_versions(
    reviewed, pathologist, viewer, django_capture_on_commit_callbacks
):
    from papreview.core.exceptions import PermissionDeniedError

    with pytest.raises(PermissionDeniedError):
        dataset_export_create(name="x", created_by=viewer)
    with pytest.raises(EmptyExportError):
        dataset_export_create(name="x", created_by=pathologist, filters={"patients": ["nobody"]})
    with pytest.raises(ValidationError):
        dataset_export_create(name="x", created_by=pathologist, params={"tile_overlap": 900})
    # The NILM slides are of two patients: too few for val and test, unless train-only.
    with pytest.raises(SplitRefusedError, match=r"matches 2 patient\(s\).*at least 3"):
        dataset_export_create(name="x", created_by=pathologist, filters={"categories": ["NILM"]})
    with django_capture_on_commit_callbacks() as callbacks:
        a = dataset_export_create(name="nightly", created_by=pathologist)
        b = dataset_export_create(
            name="nightly",
            created_by=pathologist,
            filters={"categories": ["NILM"]},
            params={"train_only": True},
        )
    assert (a.version, b.version) == (1, 2)
    assert len(callbacks) == 2  # each queued on commit
    assert b.slide_count == 2 and a.slide_count == 4
    assert ExportParams.from_dict(a.params) == ExportParams()
    assert b.params["train_only"] is True and b.params["split"] == [1.0, 0.0, 0.0]


def test_only_signed_out_slides_are_exported(make_slide, pathologist):
    make_slide(cells=[(10, 10, 20, 20, "HSIL", "accepted")], sign_out=False)
    with pytest.raises(EmptyExportError):
        dataset_export_create(name="none", created_by=pathologist)


def test_a_missing_slide_file_fails_the_export_with_its_reason(reviewed, pathologist):
    export = dataset_export_create(name="broken", created_by=pathologist)
    default_storage.delete(reviewed[2].slide.file.name)
    assert dataset_export_build(export_id=export.pk) == "failed"
    export.refresh_from_db()
    assert export.status == ExportStatus.FAILED
    assert "stored file is missing" in export.error
    assert not export.file.name
    assert not list(Path(default_storage.path("")).rglob("*.zip"))  # nothing half-written


def test_a_ready_export_is_never_rebuilt(reviewed, pathologist, tmp_path):
    export = build("immutable", pathologist)
    before = (export.file.name, export.sha256, export.manifest)
    assert dataset_export_build(export_id=export.pk) == "already_ready"
    with pytest.raises(ConflictError):
        dataset_export_requeue(export=export)
    export.refresh_from_db()
    assert (export.file.name, export.sha256, export.manifest) == before


def test_a_failed_export_can_be_queued_again_and_then_succeeds(
    reviewed, pathologist, django_capture_on_commit_callbacks
):
    export = dataset_export_create(name="again", created_by=pathologist)
    name = reviewed[2].slide.file.name
    data = default_storage.open(name).read()
    default_storage.delete(name)
    assert dataset_export_build(export_id=export.pk) == "failed"
    default_storage.save(name, ContentFile(data))  # the file is back
    with django_capture_on_commit_callbacks() as callbacks:
        export = dataset_export_requeue(export=export)
    assert export.status == ExportStatus.PENDING and export.error == ""
    assert len(callbacks) == 1
    assert dataset_export_build(export_id=export.pk) == "ready"


def test_a_second_build_while_one_runs_is_busy(reviewed, pathologist):
    """The advisory lock: a redelivered job finds the live build and leaves it alone."""
    import threading

    from django.db import connections

    export = dataset_export_create(name="busy", created_by=pathologist)
    from papreview.datasets import build as export_build

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with export_build._export_lock(export.pk):
            holding.set()
            release.wait(10)
        connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        assert dataset_export_build(export_id=export.pk) == "busy"
    finally:
        release.set()
        thread.join()
    export.refresh_from_db()
    assert export.status == ExportStatus.PENDING


def test_provenance_csv_has_the_documented_columns(reviewed, pathologist, tmp_path):
    from inference.data.export import PROVENANCE_COLUMNS

    export = build("csv", pathologist)
    root = unpack(export, tmp_path / "x")
    with (root / "provenance.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == PROVENANCE_COLUMNS
        assert len(list(reader)) == 7


@pytest.mark.slow
def test_a_large_whole_slide_image_is_exported_tile_by_tile(make_slide, pathologist, tmp_path):
    """6000 x 4000 px (72 MB as RGB) in 512 px tiles: the build's peak Python memory is that of
    a few tiles (decoding one tile takes several copies of it), far below the whole image."""
    import tracemalloc

    make_slide(
        wsi=True,
        size=(6000, 4000),
        cells=[(500 + 900 * k, 300 + 600 * k, 60, 60, "HSIL", "accepted") for k in range(6)],
    )
    export = dataset_export_create(
        name="large",
        created_by=pathologist,
        params={"tile_size": 512, "tile_overlap": 64, "empty_tile_ratio": 1.0, "train_only": True},
    )
    tracemalloc.start()
    try:
        assert dataset_export_build(export_id=export.pk) == "ready"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    export.refresh_from_db()
    n_tiles = len(tile_grid(6000, 4000, tile=512, overlap=64))
    assert sum(export.manifest["counts"]["images"].values()) == n_tiles
    assert peak < 24 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
