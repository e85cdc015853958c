"""The export task on a real Celery worker (a subprocess on the test PostgreSQL and Redis):
queued on commit to the `celery` queue, built by the worker, readable afterwards."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from inference.data.export import Export
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.datasets.services import dataset_export_create
from testkit.workers import Worker, purge_queues, wait_for
from tests.factories import PatientFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_export_is_built_by_a_real_celery_worker(make_slide, pathologist, tmp_path):
    for i in range(2):
        make_slide(PatientFactory.create(), seed=i, cells=[(10, 10, 30, 30, "HSIL", "accepted")])
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.analysis.worker_settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PAPREVIEW_TEST_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "DATASET_EXPORT_TMP_DIR": str(settings.DATASET_EXPORT_TMP_DIR),
        "ANALYSIS_WARM_UP": "false",
        "PYTHONUNBUFFERED": "1",
    }
    purge_queues()
    worker = Worker(f"datasets-test-{os.getpid()}", env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        export = dataset_export_create(  # queued on commit; two patients: train only
            name="worker", created_by=pathologist, params={"train_only": True}
        )

        def finished() -> bool:
            status = DatasetExport.objects.get(pk=export.pk).status
            return status in (ExportStatus.READY, ExportStatus.FAILED)

        wait_for(finished, timeout=90, interval=0.2, what="the export to finish")
    finally:
        worker.stop()
    export.refresh_from_db()
    assert export.status == ExportStatus.READY, worker.output()[-3000:]
    assert export.task_id  # built by the worker's task
    assert "dataset_export_build" in worker.output()
    with zipfile.ZipFile(Path(settings.MEDIA_ROOT) / str(export.file.name)) as zf:
        zf.extractall(tmp_path / "x")
    ex = Export.open(tmp_path / "x")
    assert ex.verify() == []
    assert ex.manifest["counts"]["cells"] == 2
