"""Disk full during a dataset export: the export fails cleanly with its reason, the older export
is intact, no partial file is left, and the same export builds once there is room again.

The disk is a real 3 MiB tmpfs holding MEDIA_ROOT and the export work folder (mounting needs
root; elsewhere the zip writer is made to raise ENOSPC, the error a full disk gives)."""

from __future__ import annotations

import errno
import hashlib
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from papreview.accounts.roles import Role
from papreview.cases.models import Slide, SlideStatus
from papreview.cases.services import slide_create
from papreview.datasets.build import dataset_export_build
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.datasets.services import dataset_export_create
from papreview.workflow.services import slide_sign_out
from testkit.images import field_bytes
from tests.conftest import stored_files
from tests.factories import CellFactory, PatientFactory, UserFactory, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        yield None  # not root: simulate below
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


TRAIN_ONLY = {"train_only": True}  # one patient: no val/test split


def test_an_export_on_a_full_disk_fails_cleanly(
    small_disk: Path | None, tmp_path: Path, settings: Any
) -> None:
    base = small_disk or tmp_path / "disk"
    settings.MEDIA_ROOT = base / "media"
    settings.DATASET_EXPORT_TMP_DIR = base / "export-tmp"
    pathologist = UserFactory.create(role=Role.PATHOLOGIST)
    slide = slide_create(
        patient=PatientFactory.create(),
        file=upload("field.png", field_bytes(512, 512, seed=3)),
        uploaded_by=pathologist,
    )
    Slide.objects.filter(pk=slide.pk).update(status=SlideStatus.ANALYSED)
    for i in range(3):
        CellFactory.create(slide=slide, x=40 + 120 * i, y=60, width=60, height=60)
    slide_sign_out(slide=Slide.objects.get(pk=slide.pk), by=pathologist, bethesda_category="HSIL")

    older = dataset_export_create(name="full disk", created_by=pathologist, params=TRAIN_ONLY)
    assert dataset_export_build(export_id=older.pk) == "ready"
    older.refresh_from_db()
    older_zip = Path(settings.MEDIA_ROOT) / str(older.file.name)
    assert older.status == ExportStatus.READY and _sha256(older_zip) == older.sha256

    newer = dataset_export_create(name="full disk", created_by=pathologist, params=TRAIN_ONLY)
    filler = base / "filler.bin"
    if small_disk is not None:
        free = shutil.disk_usage(small_disk).free
        with filler.open("wb") as fh:  # leave a few pages: enough to start, not to finish
            fh.write(b"\0" * max(0, free - 8 * 4096))
        outcome = dataset_export_build(export_id=newer.pk)
    else:

        def full(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        with mock.patch.object(zipfile.ZipFile, "write", full):
            outcome = dataset_export_build(export_id=newer.pk)

    assert outcome == "failed"
    newer.refresh_from_db()
    assert newer.status == ExportStatus.FAILED and "No space left on device" in newer.error
    assert not newer.file.name and not newer.sha256
    # The older export is untouched, and nothing half-written is left anywhere.
    older.refresh_from_db()
    assert older.status == ExportStatus.READY and _sha256(older_zip) == older.sha256
    with zipfile.ZipFile(older_zip) as zf:
        assert zf.testzip() is None
    exports = [p for p in stored_files(Path(settings.MEDIA_ROOT)) if "exports" in p.parts]
    assert exports == [older_zip]
    assert stored_files(Path(settings.DATASET_EXPORT_TMP_DIR)) == []

    # Room again: the same export builds.
    filler.unlink(missing_ok=True)
    assert dataset_export_build(export_id=newer.pk) == "ready"
    newer.refresh_from_db()
    assert newer.status == ExportStatus.READY
    assert _sha256(Path(settings.MEDIA_ROOT) / str(newer.file.name)) == newer.sha256
    assert DatasetExport.objects.filter(status=ExportStatus.READY).count() == 2
