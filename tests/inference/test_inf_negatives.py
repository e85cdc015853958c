"""Hard negatives: the pipeline's abnormal calls far from every marked cell (annotated training
fields) or anywhere on a NILM field (field labels, train part only) become NILM patches with
their sources, which train-classifier adds to training; the field split is stratified, fixed and
disjoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.__main__ import main as inference_main
from inference.checkpoints import load_checkpoint
from inference.data.fields import field_split
from inference.data.leaks import file_sha256
from inference.synthetic import synthetic_field
from inference.train.negatives import read_mined
from inference.types import BETHESDA_CLASSES
from testkit.checkpoints import write_random_checkpoints

NUCLEI = [(50.0 + 90 * i, 60.0 + 100 * j, 9.0) for i in range(4) for j in range(3)]


@pytest.fixture
def calling_everything(tmp_path: Path) -> tuple[Path, Path]:
    """Random small models that call every candidate abnormal (thresholds at 0)."""
    return write_random_checkpoints(
        tmp_path / "ckpt",
        detector_meta={
            "version": "det-all",
            "thresholds": {"cell": 0.0, "abnormal": 0.0},
            "data": {"split": {"train": ["f0.png", "f1.png"], "val": ["f2.png"], "test": []}},
        },
        classifier_meta={
            "version": "cls-all",
            "abnormal_threshold": 0.0,
            "data": {"split": {"train": ["f0.png", "f1.png"], "val": ["f2.png"], "test": []}},
        },
    )


def fields(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(synthetic_field(400, 340, cells=NUCLEI, seed=i)).save(folder / name)


def labelled_fields(tmp_path: Path, *, nilm: int, abnormal: int) -> tuple[list[str], Path, Path]:
    """(names, folder, fields.csv) of LBC-like fields: n*.jpg labelled NILM, a*.jpg abnormal."""
    names = [f"n{i}.jpg" for i in range(nilm)] + [f"a{i}.jpg" for i in range(abnormal)]
    images = tmp_path / "lbc"
    fields(images, names)
    labels = tmp_path / "fields.csv"
    labels.write_text(
        "image_filename,field_label\n"
        + "".join(f"{n},{'abnormal' if n.startswith('a') else 'NILM'}\n" for n in names)
    )
    return names, images, labels


def test_field_split_is_stratified_fixed_and_disjoint() -> None:
    labels = {f"n{i}.jpg": False for i in range(50)} | {f"a{i}.jpg": True for i in range(20)}
    split = field_split(labels)
    assert split == field_split(labels)  # fixed by the seed
    assert sorted(n for part in split.values() for n in part) == sorted(labels)
    assert [sum(labels[n] for n in split[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert len(split["val"]) == len(split["test"]) == 14


def test_mined_negatives_are_far_from_marks_on_training_fields_only(
    tmp_path: Path, calling_everything: tuple[Path, Path]
) -> None:
    images = tmp_path / "cric"
    fields(images, ["f0.png", "f1.png", "f2.png"])
    cells = tmp_path / "cells.csv"
    with cells.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_filename", "nucleus_x", "nucleus_y", "bethesda_system"])
        for name in ("f0.png", "f1.png", "f2.png"):
            w.writerow([name, 50, 60, "HSIL"])  # one marked nucleus per field
    det, cls = calling_everything
    out = tmp_path / "neg"
    argv = ["mine-negatives", "--images", str(images), "--cells", str(cells), "--out", str(out)]
    assert inference_main([*argv, "--detector", str(det), "--classifier", str(cls)]) == 0
    with (out / "sources.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["image"] for r in rows} <= {"f0.png", "f1.png"}  # never the val field
    assert all(r["sha256"] == file_sha256(images / r["image"]) for r in rows)
    for r in rows:  # centred on a call, never on the marked nucleus
        patch = np.asarray(Image.open(out / r["patch"]))
        assert patch.shape == (200, 200, 3)
    negatives = read_mined(out, 160)
    assert negatives.images.shape[1:] == (160, 160, 3) and set(negatives.labels) == {0}
    assert negatives.refs()[0].sha256 in {r["sha256"] for r in rows}


def test_nilm_fields_resized_and_train_classifier_takes_the_negatives(
    tmp_path: Path, calling_everything: tuple[Path, Path]
) -> None:
    names, images, labels = labelled_fields(tmp_path, nilm=10, abnormal=5)
    det, cls = calling_everything
    out = tmp_path / "neg"
    argv = ["mine-negatives", "--images", str(images), "--fields", str(labels), "--upscale", "1.2"]
    argv += ["--out", str(out), "--max-per-field", "3"]
    assert inference_main([*argv, "--detector", str(det), "--classifier", str(cls)]) == 0
    with (out / "sources.csv").open() as fh:
        mined = {r["image"] for r in csv.DictReader(fh)}
    train_nilm = {n for n in field_split({n: n.startswith("a") for n in names})["train"]}
    assert mined and mined <= {n for n in train_nilm if n.startswith("n")}

    run = tmp_path / "run"
    argv = ["train-classifier", "--init-from", str(cls), "--epochs", "1"]
    argv += ["--samples-per-epoch", "64", "--negatives", str(out), "--out", str(run)]
    argv += ["--data-dir", str(write_tiny_cric(tmp_path / "data"))]
    assert inference_main(argv) == 0
    meta = load_checkpoint(run / "classifier.pt", stage="classifier").meta
    assert meta["data"]["negatives"][0]["patches"] == sum(1 for _ in (out / "NILM").iterdir())
    assert json.loads((run / "classifier_metrics.json").read_text())["history"]


def test_abnormal_fields_give_their_most_suspicious_call_as_a_positive_of_their_class(
    tmp_path: Path, calling_everything: tuple[Path, Path]
) -> None:
    """Multiple-instance positives: an abnormal field holds at least one abnormal cell; its
    most suspicious call becomes a patch of the field's class (train part only)."""
    names = [f"n{i}.jpg" for i in range(10)] + [f"a{i}.jpg" for i in range(10)]
    images = tmp_path / "lbc"
    fields(images, names)
    classes = {n: ("HSIL" if int(n[1]) % 2 else "LSIL") for n in names if n.startswith("a")}
    labels = tmp_path / "fields.csv"
    labels.write_text(
        "image_filename,field_class,field_label\n"
        + "".join(
            f"{n},{classes.get(n, 'NILM')},{'abnormal' if n in classes else 'NILM'}\n"
            for n in names
        )
    )
    det, cls = calling_everything
    out = tmp_path / "pos"
    argv = ["mine-negatives", "--images", str(images), "--fields", str(labels), "--positives", "1"]
    argv += ["--out", str(out), "--detector", str(det), "--classifier", str(cls)]
    assert inference_main(argv) == 0
    with (out / "sources.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    train_abnormal = {n for n in field_split({n: n in classes for n in names})["train"]}
    train_abnormal &= set(classes)
    assert sorted(r["image"] for r in rows) == sorted(train_abnormal)  # one per field
    assert all(r["patch"].startswith(classes[r["image"]] + "/") for r in rows)
    positives = read_mined(out, 160)
    assert sorted(BETHESDA_CLASSES[i] for i in positives.labels) == sorted(
        classes[r["image"]] for r in rows
    )

    run = tmp_path / "run"
    argv = ["train-classifier", "--init-from", str(cls), "--epochs", "1", "--positives", str(out)]
    argv += ["--samples-per-epoch", "64", "--out", str(run)]
    argv += ["--data-dir", str(write_tiny_cric(tmp_path / "data"))]
    assert inference_main(argv) == 0
    meta = load_checkpoint(run / "classifier.pt", stage="classifier").meta
    assert meta["data"]["positives"][0]["patches"] == len(rows)


def test_positives_need_field_labels_with_a_class(tmp_path: Path, capsys) -> None:
    images = tmp_path / "lbc"
    fields(images, ["a0.jpg"])
    labels = tmp_path / "fields.csv"
    labels.write_text("image_filename,field_class,field_label\na0.jpg,HSL,abnormal\n")
    argv = ["mine-negatives", "--images", str(images), "--out", str(tmp_path / "o")]
    assert inference_main([*argv, "--cells", str(labels), "--positives", "1"]) != 0
    assert "--positives N (1 or more) takes --fields" in capsys.readouterr().err
    assert inference_main([*argv, "--fields", str(labels), "--positives", "1"]) != 0
    assert "need a field_class among" in capsys.readouterr().err


def write_tiny_cric(root: Path) -> Path:
    """A CRIC-shaped folder (cric/images, cric/cells.csv) of 12 synthetic fields."""
    folder = root / "cric" / "images"
    names = [f"c{i}.png" for i in range(12)]
    fields(folder, names)
    with (root / "cric" / "cells.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_filename", "nucleus_x", "nucleus_y", "bethesda_system"])
        for i, name in enumerate(names):
            for k, (x, y, _) in enumerate(NUCLEI[:4]):
                w.writerow([name, x, y, ("NILM", "LSIL", "HSIL", "ASC-US")[(i + k) % 4]])
    return root


def test_train_classifier_not_a_cell_teaches_the_negatives_as_not_cells(
    tmp_path: Path, calling_everything: tuple[Path, Path]
) -> None:
    _, images, labels = labelled_fields(tmp_path, nilm=6, abnormal=3)
    det, cls = calling_everything
    out = tmp_path / "neg"
    argv = ["mine-negatives", "--images", str(images), "--fields", str(labels), "--out", str(out)]
    argv += ["--max-per-field", "3", "--detector", str(det), "--classifier", str(cls)]
    assert inference_main(argv) == 0
    mined = sum(1 for _ in (out / "NILM").iterdir())
    assert mined > 0

    run = tmp_path / "run"
    argv = ["train-classifier", "--init-from", str(cls), "--not-a-cell", "--epochs", "1"]
    argv += ["--samples-per-epoch", "64", "--negatives", str(out), "--out", str(run)]
    argv += ["--data-dir", str(write_tiny_cric(tmp_path / "data"))]
    assert inference_main(argv) == 0
    meta = load_checkpoint(run / "classifier.pt", stage="classifier").meta
    assert meta["config"]["not_a_cell"] is True
    assert meta["classes"] == [*BETHESDA_CLASSES, "not-a-cell"]
    assert meta["data"]["train_cells"]["not-a-cell"] == mined
    assert meta["training"]["init_from"]["file"] == "classifier.pt"

    # retraining it (as the registry does: --init-from, no flag) keeps the outcome
    again = tmp_path / "again"
    argv = ["train-classifier", "--init-from", str(run / "classifier.pt"), "--epochs", "1"]
    argv += ["--samples-per-epoch", "64", "--negatives", str(out), "--out", str(again)]
    argv += ["--data-dir", str(tmp_path / "data")]
    assert inference_main(argv) == 0
    meta = load_checkpoint(again / "classifier.pt", stage="classifier").meta
    assert meta["config"]["not_a_cell"] is True
    assert meta["data"]["train_cells"]["not-a-cell"] == mined

    # the new checkpoint runs in the pipeline
    argv = ["predict", str(images / "n0.jpg"), "--out", str(tmp_path / "pred")]
    argv += ["--detector", str(det), "--classifier", str(run / "classifier.pt")]
    assert inference_main(argv) == 0


def test_train_classifier_widths_set_a_new_architecture_only(
    tmp_path: Path, calling_everything: tuple[Path, Path], capsys
) -> None:
    data = str(write_tiny_cric(tmp_path / "data"))
    run = tmp_path / "wide"
    argv = ["train-classifier", "--widths", "8,12,16,24", "--crop-px", "32", "--epochs", "1"]
    argv += ["--samples-per-epoch", "64", "--data-dir", data, "--out", str(run)]
    assert inference_main(argv) == 0
    meta = load_checkpoint(run / "classifier.pt", stage="classifier").meta
    assert meta["config"]["widths"] == [8, 12, 16, 24] and meta["config"]["crop_px"] == 32
    _, cls = calling_everything
    argv = ["train-classifier", "--widths", "8,12,16,24", "--init-from", str(cls)]
    assert inference_main([*argv, "--data-dir", data, "--out", str(tmp_path / "x")]) != 0
    assert "not with --init-from" in capsys.readouterr().err
