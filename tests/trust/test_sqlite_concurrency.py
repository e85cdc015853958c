"""Row 11: the embedded default (SQLite) takes several uploads at once. Eight threads each run
transactions that read, then write (what an upload does), against a real SQLite file migrated
with the app's settings: none is refused with "database is locked"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import threading, django
django.setup()
from django.db import connection, transaction, OperationalError
from papreview.cases.models import Patient
assert connection.vendor == "sqlite"
with connection.cursor() as c:
    c.execute("PRAGMA journal_mode")
    print("journal", c.fetchone()[0])
errors = []
def work(t):
    try:
        for i in range(15):
            with transaction.atomic():
                Patient.objects.filter(identifier__startswith=f"T{t}-").count()  # a read first
                Patient.objects.create(identifier=f"T{t}-{i}", birth_year=1970)
    except OperationalError as exc:
        errors.append(str(exc))
    finally:
        connection.close()
threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print("errors", len(errors), errors[:1])
print("patients", Patient.objects.count())
"""


def test_concurrent_writes_to_the_embedded_sqlite_database(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "papreview.settings.base",
    }
    env.pop("CELERY_BROKER_URL", None)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "journal wal" in out
    assert "errors 0 []" in out, out
    assert "patients 120" in out
