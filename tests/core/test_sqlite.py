"""The embedded default (SQLite): the audit table's append-only triggers and the backup's
database copy (VACUUM INTO), checked on a scratch SQLite file."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path

import pytest

from papreview.core.backups import _dump_database

migration = importlib.import_module("papreview.audit.migrations.0002_append_only_triggers")


def _db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE audit_auditevent (id INTEGER PRIMARY KEY, action TEXT, data TEXT)")
    for sql in migration.SQLITE_FORWARD:
        conn.execute(sql)
    conn.execute("INSERT INTO audit_auditevent (action, data) VALUES ('login', '{}')")
    conn.commit()
    return conn


def test_sqlite_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    conn = _db(tmp_path / "db.sqlite3")
    for sql in ("UPDATE audit_auditevent SET action = 'x'", "DELETE FROM audit_auditevent"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.execute("INSERT INTO audit_auditevent (action, data) VALUES ('logout', '{}')")
    assert conn.execute("SELECT action FROM audit_auditevent ORDER BY id").fetchall() == [
        ("login",),
        ("logout",),
    ]


def test_sqlite_backup_is_a_consistent_copy_with_the_triggers(tmp_path: Path) -> None:
    source = tmp_path / "db.sqlite3"
    _db(source).close()
    out = tmp_path / "out"
    out.mkdir()
    copy = _dump_database({"NAME": str(source)}, "sqlite", out)
    conn = sqlite3.connect(copy)
    assert conn.execute("SELECT count(*) FROM audit_auditevent").fetchone() == (1,)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_auditevent")
