"""Row 11 in the browser: the embedded default (SQLite, no services) takes six files dropped on
the upload page at once. Before WAL and immediate transactions, uploads side by side answered 503
"database is locked", which the page showed as "Connection lost".

The app runs as `make run` runs it (default settings, a SQLite file, the filesystem broker), in
gunicorn with several workers and threads, and real Chromium drops six images on the page.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import expect

from testkit.browser import PASSWORD, log_in, screenshot
from testkit.images import field_bytes
from testkit.stack import ROOT, AppServer

FILES = 6
SEED = f"""  # a cytotechnologist: no two-factor step by default
import django
django.setup()
from papreview.accounts.roles import Role
from papreview.accounts.services import user_create
from papreview.cases.models import Patient
user_create(username="embedded-path", password="{PASSWORD}", role=Role.CYTOTECHNOLOGIST)
print(Patient.objects.create(identifier="DROP-6").pk)
"""


def test_six_files_dropped_at_once_all_arrive_on_the_embedded_database(
    browser, tmp_path: Path
) -> None:
    database = tmp_path / "db.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "papreview.settings.base",  # the embedded default
        "DATABASE_URL": f"sqlite:///{database}",
        "CELERY_BROKER_URL": "",  # the filesystem broker
        "PAPREVIEW_BROKER_DIR": str(tmp_path / "broker"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    seeded = subprocess.run(
        [sys.executable, "-c", SEED], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    patient = seeded.stdout.strip().splitlines()[-1]
    images = []
    for i in range(FILES):
        path = tmp_path / f"field-{i}.png"
        path.write_bytes(field_bytes(640, 480, seed=i))
        images.append(str(path))

    server = AppServer(env, workers=2, threads=4)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        try:
            log_in(page, server.base_url, "embedded-path")
            page.goto(f"{server.base_url}/upload/")
            page.get_by_label("Existing patient").select_option(patient)
            page.set_input_files("#file-input", images)
            # every item is stored and shows its slide's status (no worker runs here: queued)
            # (a locator, not a script: the embedded settings enforce the CSP, no eval)
            expect(page.locator(".file-item[data-slide-status]")).to_have_count(
                FILES, timeout=120_000
            )
            screenshot(page, "upload-six-at-once-sqlite.png")
            alerts = page.locator(".file-item .msg[role=alert]").all_inner_texts()
            assert alerts == [], alerts
        finally:
            context.close()
        log = server.output()
    finally:
        server.close()
    assert "database is locked" not in log, log[-3000:]
    with sqlite3.connect(database) as db:
        names = sorted(row[0] for row in db.execute("SELECT original_filename FROM cases_slide"))
    assert names == sorted(Path(p).name for p in images)
