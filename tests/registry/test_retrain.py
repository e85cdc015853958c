"""The retraining loop end to end on tiny data (CPU, seconds): export -> `python -m inference
train-* --data` -> `manage.py register_model` -> evaluation on the export's test split ->
activation (admins only) -> new analyses use it, old runs keep theirs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from inference.__main__ import main as inference_main
from inference.checkpoints import load_checkpoint
from papreview.analysis.models import ModelStage, ModelVersion
from papreview.analysis.services import model_version_activate, model_versions_for_analysis
from papreview.cases.models import Slide
from papreview.datasets.build import dataset_export_build
from papreview.datasets.services import dataset_export_create
from papreview.registry.models import EvaluationStatus, ModelEvaluation
from papreview.registry.services import model_evaluation_request, model_evaluation_run
from tests.datasets.conftest import TRAIN_CLASSES, field_pixels, png_bytes
from tests.factories import AnalysisRunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_export(make_patients, pathologist, tmp_path):
    """Three patients, two slides each, a few cells of several classes on every slide."""
    for reviewed in make_patients("R"):
        slide = reviewed.slide
        with default_storage.open(slide.file.name, "rb") as fh:  # as an upload records it
            Slide.objects.filter(pk=slide.pk).update(sha256=hashlib.sha256(fh.read()).hexdigest())
    export = dataset_export_create(name="retrain", created_by=pathologist, params={"crop_size": 48})
    assert dataset_export_build(export_id=export.pk) == "ready"
    export.refresh_from_db()
    zip_path = Path(default_storage.path(str(export.file.name)))
    folder = tmp_path / "export"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(folder)
    return export, zip_path, folder


def run_cli(*argv: str) -> dict:
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        code = inference_main(list(argv))
    text = out.getvalue()
    assert code == 0, text
    # training logs come first (tqdm.write); the result is the JSON document at the end
    return json.loads(text[text.rindex("\n{\n") + 1 :] if not text.startswith("{\n") else text)


def tiny_cric(root: Path, extra: tuple[bytes, ...] = ()) -> Path:
    """A 6-image CRIC-shaped folder (cells.csv + images/) for --merge-base, plus `extra`
    image files."""
    images = root / "cric" / "images"
    images.mkdir(parents=True)
    files = [png_bytes(field_pixels(160, 120, seed=100 + i)) for i in range(6)] + list(extra)
    with (root / "cric" / "cells.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_filename", "nucleus_x", "nucleus_y", "bethesda_system"])
        for i, data in enumerate(files):
            (images / f"c{i}.png").write_bytes(data)
            for k in range(2):
                w.writerow([f"c{i}.png", 40 + 50 * k, 60, TRAIN_CLASSES[(i + k) % 4]])
    return root


def test_tiny_export_retrains_both_stages_registers_evaluates_and_activates(
    tiny_export, tmp_path, admin_user, pathologist, api, versions
):
    export, zip_path, folder = tiny_export
    m = export.manifest
    assert all(m["counts"]["crops"][s] > 0 for s in ("train", "val", "test"))

    cls = run_cli(
        "train-classifier", "--data", str(zip_path), "--out", str(tmp_path / "cls"),
        "--epochs", "2", "--samples-per-epoch", "32", "--batch-size", "16", "--crop-px", "32",
        "--threads", "1",
    )  # fmt: skip
    det = run_cli(
        "train-detector", "--data", str(folder), "--out", str(tmp_path / "det"),
        "--epochs", "2", "--crops-per-image", "1", "--crop-size", "64", "--batch-size", "4",
        "--threads", "1",
    )  # fmt: skip
    cls_path, det_path = Path(cls["checkpoint"]), Path(det["checkpoint"])
    assert cls["val"]["six_class"]["n"] == sum(m["counts"]["per_split"]["val"].values())
    assert "cell_recall" in det["val"]
    meta = load_checkpoint(cls_path, stage="classifier").meta
    assert meta["data"]["export"]["name"] == "retrain"
    assert meta["data"]["export"]["id"] == export.pk
    assert meta["data"]["split"] == m["split"]
    record = meta["data"]["images_sha256"]  # the training and validation images, by SHA-256
    for split in ("train", "val"):
        assert record[split] == sorted({s["sha256"] for s in m["slides"] if s["split"] == split})

    out = io.StringIO()
    call_command("register_model", str(cls_path), stdout=out)
    registered = json.loads(out.getvalue())
    mv = ModelVersion.objects.get(pk=registered["id"])
    assert mv.stage == ModelStage.CLASSIFIER and mv.name == cls["version"]
    assert mv.sha256 == hashlib.sha256(cls_path.read_bytes()).hexdigest()
    assert mv.training.export == export
    assert mv.training_data == "dataset export retrain v1"
    assert "val" in mv.metrics and not mv.is_active
    assert mv.metrics["images_sha256"] == record
    # the same checkpoint again: the same row
    call_command("register_model", str(cls_path), "--stage", "classifier", stdout=io.StringIO())
    assert ModelVersion.objects.filter(name=cls["version"]).count() == 1
    call_command("register_model", str(det_path), "--export", str(export.pk), stdout=io.StringIO())
    det_mv = ModelVersion.objects.get(name=det["version"])
    assert det_mv.stage == ModelStage.DETECTOR and det_mv.training.export == export

    # Compare: each version scored as the pipeline it makes with the other stage's active
    # version, on the export's test split, through what the workers run
    for version in (mv, det_mv):
        evaluation = model_evaluation_request(model_version=version, export=export, by=admin_user)
        assert model_evaluation_run(evaluation_id=evaluation.pk) == EvaluationStatus.DONE
    cls_eval = ModelEvaluation.objects.get(model_version=mv)
    assert cls_eval.partner is not None and cls_eval.partner.stage == ModelStage.DETECTOR
    assert cls_eval.metrics["pair"] == {"detector": cls_eval.partner.name, "classifier": mv.name}
    assert not [w for w in cls_eval.metrics["warnings"] if w.startswith(mv.name)]  # no leak
    n_test_images = m["counts"]["images"]["test"]
    assert cls_eval.metrics["images_evaluated"] == n_test_images
    assert cls_eval.metrics["metrics"]["annotated_cells"] == sum(
        m["counts"]["per_split"]["test"].values()
    )
    four = cls_eval.metrics["metrics"]["matched_cells"]["four_class"]
    assert len(four["confusion_matrix"]) == 4
    assert cls_eval.metrics["reviewer"]["fields"] == n_test_images
    det_eval = ModelEvaluation.objects.get(model_version=det_mv)
    assert det_eval.partner is not None and det_eval.partner.stage == ModelStage.CLASSIFIER
    assert det_eval.metrics["metrics"]["images"] == n_test_images

    # Activation: admins only, over the API; the previous version's runs keep it.
    old_run = AnalysisRunFactory.create(classifier_version=versions.classifier)
    model_version_activate(model_version=versions.classifier)
    url = f"/api/model-versions/{mv.pk}/activate/"
    assert api(pathologist).post(url).status_code == 403
    assert api(None).post(url).status_code == 401
    mv.refresh_from_db()
    assert not mv.is_active
    response = api(admin_user).post(url)
    assert response.status_code == 200 and response.json()["is_active"] is True
    versions.classifier.refresh_from_db()
    assert not versions.classifier.is_active
    old_run.refresh_from_db()
    assert old_run.classifier_version == versions.classifier
    # the compare page shows both evaluations with their confusion matrices
    from django.test import Client

    client = Client()
    client.force_login(pathologist)
    page = client.get(f"/models/?export={export.pk}").content.decode()
    assert page.count('class="confusion"') == 2
    assert "abnormal-cell recall" in page and "truth \\ predicted" in page
    det_mv_active = api(admin_user).post(f"/api/model-versions/{det_mv.pk}/activate/")
    assert det_mv_active.status_code == 200
    assert model_versions_for_analysis() == (det_mv, mv)


def test_train_on_an_export_merged_with_the_base_data(tiny_export, tmp_path):
    export, _, folder = tiny_export
    # one base image is the file of an export slide (in its val split): dropped from the base
    val_slide = next(s for s in export.manifest["slides"] if s["split"] == "val")
    with default_storage.open(str(Slide.objects.get(pk=val_slide["id"]).file.name), "rb") as fh:
        base = tiny_cric(tmp_path / "base", extra=(fh.read(),))
    cls = run_cli(
        "train-classifier", "--data", str(folder), "--merge-base", "--data-dir", str(base),
        "--out", str(tmp_path / "cls"), "--epochs", "1", "--samples-per-epoch", "16",
        "--batch-size", "16", "--crop-px", "32", "--threads", "1",
    )  # fmt: skip
    meta = load_checkpoint(Path(cls["checkpoint"]), stage="classifier").meta
    assert meta["data"]["export"]["name"] == "retrain"
    assert meta["data"]["merged_with"]["name"].startswith("CRIC")
    export_train = sum(export.manifest["counts"]["per_split"]["train"].values())
    assert sum(meta["data"]["train_cells"].values()) > export_train
    merged = meta["data"]["merged_with"]
    assert merged["dropped_in_export"] == 1 and merged["dropped_images"] == ["c6.png"]
    assert all("c6.png" not in names for names in merged["split"].values())
    record = meta["data"]["images_sha256"]
    assert val_slide["sha256"] in record["val"] and val_slide["sha256"] not in record["train"]


def test_a_tampered_export_is_refused_for_training(tiny_export, tmp_path):
    _, _, folder = tiny_export
    label = next((folder / "labels").rglob("*.txt"))
    label.write_text("0 0.5 0.5 0.2 0.2\n")
    code = inference_main(
        ["train-detector", "--data", str(folder), "--out", str(tmp_path / "d"), "--epochs", "1"]
    )
    assert code == 2
