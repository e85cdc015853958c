"""Row 4 in deployment: `docker/compose.yaml` runs the app as the insert-only runtime role.

The web service's start (`docker/entrypoint.sh web`) is run for real against a fresh PostgreSQL
database: it migrates as the owner, makes the runtime role, then starts the app server as the
runtime role. Here the app server is a stand-in `gunicorn` on PATH that reports which role it is
connected as and whether it can rewrite the audit table.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from django.db import connection

REPO = Path(__file__).resolve().parents[2]

STAND_IN = """#!{python}
import os, sys
sys.path.insert(0, os.getcwd())  # gunicorn imports the app from its working directory
import django, psycopg
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "papreview.settings.base")  # as papreview.wsgi
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("SELECT current_user")
    print("connected-as", cursor.fetchone()[0])
    cursor.execute("INSERT INTO audit_auditevent (at, action, actor_username, target_type,"
                   " target_id, data) VALUES (now(), 'login', 'app', '', '', '{{}}')")
    try:
        cursor.execute("UPDATE audit_auditevent SET actor_username = 'forged'")
        print("audit-update allowed")
    except django.db.utils.ProgrammingError as exc:
        assert isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege), exc
        print("audit-update refused")
"""


def test_compose_runs_every_app_service_as_the_runtime_role() -> None:
    compose = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    app_services = {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [""])[0] in {"web", "worker", "beat"}
    }
    assert {"web", "worker", "trainer", "beat", "gpu-worker"} <= set(app_services)
    for name, service in app_services.items():
        assert service["environment"]["DATABASE_URL"].startswith("postgres://papreview_app:"), name
        # only the web service, which migrates, knows the owner's URL
        assert ("OWNER_DATABASE_URL" in service["environment"]) == (name == "web"), name
        if name != "web":  # the runtime role exists once web is up
            assert service["depends_on"]["web"]["condition"] == "service_healthy", name


@pytest.mark.django_db
def test_the_web_start_migrates_as_owner_and_serves_as_the_insert_only_role(tmp_path) -> None:
    params = connection.get_connection_params()
    host, port = params.get("host") or "127.0.0.1", params.get("port") or 5432
    owner = params.get("user") or "postgres"
    suffix = uuid.uuid4().hex[:8]
    database, role = f"compose_{suffix}", f"papreview_app_{suffix}"
    server_url = f"postgres://{owner}@{host}:{port}/postgres"
    with psycopg.connect(server_url, autocommit=True) as server:
        server.execute(f'CREATE DATABASE "{database}"')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "gunicorn"
    stand_in.write_text(STAND_IN.format(python=sys.executable))
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "OWNER_DATABASE_URL": f"postgres://{owner}@{host}:{port}/{database}",
        "DATABASE_URL": f"postgres://{role}:runtime-pw-1@{host}:{port}/{database}",
        "APP_DB_ROLE": role,
        "APP_DB_PASSWORD": "runtime-pw-1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    try:
        started = subprocess.run(
            ["bash", "docker/entrypoint.sh", "web"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert started.returncode == 0, started.stderr[-3000:]
        assert f"connected-as {role}" in started.stdout, started.stdout
        assert "audit-update refused" in started.stdout, started.stdout
    finally:
        with psycopg.connect(server_url, autocommit=True) as server:
            server.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            server.execute(f'DROP ROLE IF EXISTS "{role}"')
