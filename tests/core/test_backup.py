"""manage.py backup and restore: a round trip into a scratch PostgreSQL database and a fresh
media folder gives back the same rows (audit trail and its append-only trigger included) and
the same files; a damaged archive is refused before anything is touched."""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import connection

from papreview.accounts.roles import Role
from papreview.audit.models import AuditEvent
from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.cases.services import slide_create
from papreview.review.models import Cell, CellRevision
from papreview.review.services import cell_update
from papreview.workflow.services import slide_sign_out
from tests.conftest import stored_files
from tests.factories import CellFactory, PatientFactory, UserFactory, upload

pytestmark = pytest.mark.django_db(transaction=True)

TABLES = (
    "auth_user",
    "cases_patient",
    "cases_slide",
    "cases_interpretation",
    "review_cell",
    "review_cellrevision",
    "audit_auditevent",
)


@pytest.fixture(autouse=True)
def role_groups() -> None:
    for role in Role:  # a flushed database lacks the data migration's groups
        Group.objects.get_or_create(name=role.value)


def _admin_conninfo(dbname: str) -> str:
    db = connection.settings_dict
    return f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={dbname}"


@pytest.fixture
def scratch_database() -> Iterator[str]:
    name = f"{connection.settings_dict['NAME']}_restore_{os.getpid()}"
    with psycopg.connect(_admin_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(_admin_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _counts(conninfo: str) -> dict[str, int]:
    with psycopg.connect(conninfo) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in stored_files(root)
    }


def test_backup_and_restore_round_trip(
    media_root: Path, tmp_path: Path, scratch_database: str, capsys: Any
) -> None:
    pathologist = UserFactory.create(role=Role.PATHOLOGIST)
    patient = PatientFactory.create()
    slides = [
        slide_create(
            patient=patient, file=upload(f"f{i}.png", seed=40 + i), uploaded_by=pathologist
        )
        for i in range(2)
    ]
    Slide.objects.filter(pk=slides[0].pk).update(status=SlideStatus.ANALYSED)
    slides[0].refresh_from_db()  # the cell service trusts the slide cached on the cell
    cell = CellFactory.create(slide=slides[0], x=1, y=1, width=9, height=9)
    cell_update(cell=cell, version=1, by=pathologist, current_class="LSIL")
    slide_sign_out(
        slide=Slide.objects.get(pk=slides[0].pk), by=pathologist, bethesda_category="LSIL"
    )
    assert AuditEvent.objects.count() >= 4 and len(stored_files(media_root)) == 2

    archive = tmp_path / "backups" / "papreview.tar.gz"
    call_command("backup", output=archive)
    assert "Backup written to" in capsys.readouterr().out
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"manifest.json", "database.dump"} <= names
    assert sum(n.startswith("media/") for n in names) == 2

    restored_media = tmp_path / "restored-media"
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{scratch_database}"
    call_command("restore", str(archive), database_url=url, media_root=restored_media, yes=True)

    source = _counts(_admin_conninfo(db["NAME"]))
    assert _counts(_admin_conninfo(scratch_database)) == source
    assert source["review_cellrevision"] == CellRevision.objects.count() == 1
    assert source["cases_patient"] == Patient.objects.count() and Cell.objects.count() == 1
    assert _digests(restored_media) == _digests(media_root)
    # The restored audit table is still append-only.
    with (
        psycopg.connect(_admin_conninfo(scratch_database)) as conn,
        pytest.raises(psycopg.Error, match="append-only"),
    ):
        conn.execute("DELETE FROM audit_auditevent")


def test_a_damaged_archive_is_refused_and_nothing_changes(
    media_root: Path, tmp_path: Path, scratch_database: str
) -> None:
    patient = PatientFactory.create()
    slide_create(patient=patient, file=upload("a.png", seed=50))
    archive = tmp_path / "good.tar.gz"
    call_command("backup", output=archive)

    # Rebuild the archive with one media file changed (its checksum no longer matches).
    damaged = tmp_path / "damaged.tar.gz"
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    victim = next(p for p in (unpacked / "media").rglob("*") if p.is_file())
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with tarfile.open(damaged, "w:gz") as tar:
        for path in sorted(unpacked.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(unpacked).as_posix())

    target_media = tmp_path / "target-media"
    target_media.mkdir()
    (target_media / "keep.txt").write_text("untouched")
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{scratch_database}"
    with pytest.raises(CommandError, match="Checksum mismatch"):
        call_command("restore", str(damaged), database_url=url, media_root=target_media, yes=True)
    assert (target_media / "keep.txt").read_text() == "untouched"
    with psycopg.connect(_admin_conninfo(scratch_database)) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,), "the scratch database was not touched"
    with pytest.raises(CommandError, match="not a readable backup"):
        bogus = tmp_path / "bogus.tar.gz"
        bogus.write_bytes(b"not a tarball")
        call_command("restore", str(bogus), database_url=url, media_root=target_media, yes=True)
