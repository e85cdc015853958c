"""The review-integrity check on the real stack: PostgreSQL, Redis and a real Celery worker with
the committed weights analyse a real CRIC field; a NILM sign-out with flagged cells undecided is
refused; the pathologist decides them (some cleared from the gallery, one relabelled, one
rejected) and signs out; the export built by the worker never calls an undecided cell accepted."""

from __future__ import annotations

import csv
import os
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from inference.data.export import Export
from papreview.cases.models import Slide, SlideStatus
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.review.models import Cell, CellSighting, ReviewStatus
from papreview.review.selectors import slide_flag_summary
from testkit.workers import Worker, purge_queues, wait_for, worker_env
from tests.factories import PatientFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def most_abnormal_cric_field() -> Path:
    """The CRIC field with the most marked abnormal nuclei (the real data must be there: CI has
    it beside the repository, PAPREVIEW_DATA_DIR points elsewhere)."""
    cric = Path(settings.PAPREVIEW_DATA_DIR) / "cric"
    table = cric / "cells.csv"
    if not table.is_file():
        pytest.fail(f"The CRIC data is missing ({table}); set PAPREVIEW_DATA_DIR.")
    with table.open(newline="") as fh:
        abnormal = Counter(
            row["image_filename"] for row in csv.DictReader(fh) if row["bethesda_system"] != "NILM"
        )
    name = min(abnormal, key=lambda n: (-abnormal[n], n))
    return cric / "images" / name


def test_real_field_cannot_be_signed_out_nilm_until_its_flagged_cells_are_decided(
    api, pathologist, tmp_path
):
    field = most_abnormal_cric_field()
    db = connection.settings_dict
    env = worker_env(
        f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        settings.CELERY_BROKER_URL,
        Path(settings.MEDIA_ROOT),
        (settings.ANALYSIS_DEFAULT_DETECTOR, settings.ANALYSIS_DEFAULT_CLASSIFIER),
        DATASET_EXPORT_TMP_DIR=str(settings.DATASET_EXPORT_TMP_DIR),
        ANALYSIS_TILE_SIZE="1024",
        ANALYSIS_BATCH_SIZE="8",
    )
    purge_queues()
    worker = Worker(f"review-stack-{os.getpid()}", env, tmp_path / "worker.log")
    client = api(pathologist)
    try:
        worker.wait_ready()
        patient = PatientFactory.create()
        with field.open("rb") as fh:
            uploaded = client.post(
                "/api/slides/", {"patient": patient.pk, "file": fh}, format="multipart"
            )
        assert uploaded.status_code == 201, uploaded.content
        slide_id = uploaded.json()["id"]

        def analysed() -> bool:
            status = Slide.objects.get(pk=slide_id).status
            assert status != SlideStatus.FAILED, worker.output()[-3000:]
            return status == SlideStatus.ANALYSED

        wait_for(analysed, timeout=180, interval=0.2, what="the analysis")

        summary = slide_flag_summary(slide_id=slide_id)
        assert summary.flagged >= 3, "the committed models flag abnormal cells on this field"
        sign_out = f"/api/slides/{slide_id}/sign-out/"
        refused = client.post(sign_out, {"bethesda_category": "NILM"})
        assert refused.status_code == 409 and refused.json()["code"] == "flagged_cells_undecided"
        assert Slide.objects.get(pk=slide_id).status == SlideStatus.ANALYSED

        # The pathologist decides every flagged cell: the first relabelled LSIL, the second
        # rejected, the rest seen in the gallery and cleared as "reviewed, none abnormal".
        flagged = [pk for pk, _ in summary.undecided]
        first, second, rest = flagged[0], flagged[1], flagged[2:]
        for pk, change in (
            (first, {"current_class": "LSIL"}),
            (second, {"review_status": "rejected"}),
        ):
            version = Cell.objects.get(pk=pk).version
            patched = client.patch(f"/api/cells/{pk}/", {"version": version, **change})
            assert patched.status_code == 200, patched.content
        client.post(
            f"/api/slides/{slide_id}/sightings/", {"cells": rest, "via": "gallery"}, format="json"
        )
        cleared = client.post(
            f"/api/slides/{slide_id}/cells/clear/", {"cells": rest}, format="json"
        )
        assert cleared.status_code == 200 and len(cleared.json()["cleared"]) == len(rest)
        assert CellSighting.objects.filter(cell_id__in=rest, seen_by=pathologist).count() == len(
            rest
        )
        signed = client.post(sign_out, {"bethesda_category": "LSIL"})
        assert signed.status_code == 200, signed.content

        # One patient: a train-only export, asked for explicitly.
        created = client.post(
            "/api/exports/",
            {"name": "stack check", "params": {"train_only": True}},
            format="json",
        )
        assert created.status_code in (200, 201, 202), created.content
        export_id = created.json()["id"]

        def built() -> bool:
            status = DatasetExport.objects.get(pk=export_id).status
            return status in (ExportStatus.READY, ExportStatus.FAILED)

        wait_for(built, timeout=120, interval=0.2, what="the export")
    finally:
        worker.stop()
    export = DatasetExport.objects.get(pk=export_id)
    assert export.status == ExportStatus.READY, worker.output()[-3000:]
    with zipfile.ZipFile(Path(settings.MEDIA_ROOT) / str(export.file.name)) as zf:
        zf.extractall(tmp_path / "x")
    ex = Export.open(tmp_path / "x")
    rows = {int(r["cell_id"]): r for r in ex.provenance()}
    cells = {c.pk: c for c in Cell.objects.filter(slide_id=slide_id)}
    assert set(rows) == set(cells)
    undecided = {pk for pk, c in cells.items() if c.review_status == ReviewStatus.PREDICTED}
    assert undecided, "most cells of a field are never looked at"
    for pk, row in rows.items():
        if pk in undecided:
            assert (row["action"], row["label_source"], row["reviewer"]) == (
                "undecided",
                "undecided",
                "",
            ), row
        else:
            assert row["action"] != "undecided" and row["label_source"] == "decided", row
            assert row["reviewer"] == pathologist.username
    assert rows[first]["action"] == "relabelled" and rows[first]["final_class"] == "LSIL"
    assert rows[second]["action"] == "rejected"
    assert {rows[pk]["action"] for pk in rest} == {"cleared"}
    assert {rows[pk]["final_class"] for pk in rest} == {"NILM"}
    # The training formats carry only the decided, kept cells (the rejected one left out).
    assert ex.manifest["counts"]["cells"] == 1 + len(rest)
