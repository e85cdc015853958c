"""Settings read from the environment, the Celery app, and the `make run` commands."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command

from inference.types import BETHESDA_CLASSES
from papreview import celery_app
from papreview.accounts.roles import ROLE_NAMES, Role, user_can_sign_out, user_roles
from papreview.cases.models import Patient, Slide

ROOT = Path(__file__).resolve().parents[2]
ENV_KEYS = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "PAPREVIEW_DATA_DIR",
    "MEDIA_ROOT",
    "DJANGO_SETTINGS_MODULE",
    "PAPREVIEW_BROKER_DIR",
    "CELERY_BEAT_SCHEDULE_FILENAME",
    "SECRET_KEY",
    # Set by testkit/browser.py when imported (Playwright); check --deploy warns about it.
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "DEBUG",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(extra)
    return env


def run_python(code: str, env: dict[str, str], cwd: Path) -> str:
    env = {**env, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_unset_environment_means_embedded_defaults(tmp_path: Path) -> None:
    """From any cwd: SQLite in var/, the filesystem broker, data dir ../shared/data of the repo."""
    code = (
        "import json\n"
        "from papreview.settings import base as s\n"
        "print(json.dumps({'db': s.DATABASES['default'], 'broker': s.CELERY_BROKER_URL,"
        " 'opts': s.CELERY_BROKER_TRANSPORT_OPTIONS, 'data': str(s.PAPREVIEW_DATA_DIR),"
        " 'media': str(s.MEDIA_ROOT), 'device': s.INFERENCE_DEVICE, 'debug': s.DEBUG,"
        " 'max_pixels': s.SLIDE_MAX_PIXELS}, default=str))"
    )
    out = json.loads(run_python(code, clean_env(), cwd=tmp_path))
    assert out["db"]["ENGINE"] == "django.db.backends.sqlite3"
    assert out["db"]["NAME"] == str(ROOT / "var" / "db.sqlite3")
    assert out["broker"] == "filesystem://"
    assert out["opts"]["data_folder_in"] == str(ROOT / "var" / "broker" / "queue")
    assert out["data"] == str((ROOT / ".." / "shared" / "data").resolve())
    assert out["media"] == str(ROOT / "var" / "media")
    assert (out["device"], out["debug"]) == ("auto", False)
    assert out["max_pixels"] > 0


def test_environment_overrides_defaults(tmp_path: Path) -> None:
    code = (
        "import json\n"
        "from papreview.settings import base as s\n"
        "print(json.dumps({'db': s.DATABASES['default']['ENGINE'], 'broker': s.CELERY_BROKER_URL,"
        " 'data': str(s.PAPREVIEW_DATA_DIR), 'device': s.INFERENCE_DEVICE,"
        " 'hosts': s.ALLOWED_HOSTS}))"
    )
    env = clean_env(
        DATABASE_URL="postgres://u@db.example:5432/x",
        CELERY_BROKER_URL="redis://cache.example:6379/2",
        PAPREVIEW_DATA_DIR=str(tmp_path),
        INFERENCE_DEVICE="cuda:1",
        ALLOWED_HOSTS="a.example,b.example",
    )
    out = json.loads(run_python(code, env, cwd=tmp_path))
    assert out["db"] == "django.db.backends.postgresql"
    assert out["broker"] == "redis://cache.example:6379/2"
    assert out["data"] == str(tmp_path)
    assert out["device"] == "cuda:1"
    assert out["hosts"] == ["a.example", "b.example"]


def test_production_settings_pass_check_deploy() -> None:
    env = clean_env(
        DJANGO_SETTINGS_MODULE="papreview.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="papreview.example.org",
        DATABASE_URL=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x"),
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key() -> None:
    env = clean_env(
        DJANGO_SETTINGS_MODULE="papreview.settings.production", ALLOWED_HOSTS="x.example"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_celery_is_configured_for_reliable_single_job_workers() -> None:
    celery_app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    conf = celery_app.conf
    assert conf.broker_url == settings.CELERY_BROKER_URL
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    route = celery_app.amqp.router.route({}, "papreview.analysis.tasks.slide_analyse", (), {})
    assert route["queue"].name == "inference"
    retrain = celery_app.amqp.router.route({}, "papreview.registry.tasks.retrain_job_run", (), {})
    assert retrain["queue"].name == "training"
    other = celery_app.amqp.router.route({}, "papreview.core.tasks.worker_ping", (), {})
    assert other["queue"].name == "celery"
    assert "papreview.core.tasks.worker_ping" in celery_app.tasks


@pytest.mark.django_db
def test_role_groups_exist_after_migrate_and_admin_group_has_permissions() -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLE_NAMES)
    admin = Group.objects.get(name="admin")
    assert admin.permissions.filter(codename="change_slide").exists()
    assert admin.permissions.filter(codename="add_user").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.ADMIN, set(BETHESDA_CLASSES)),
        (Role.PATHOLOGIST, set(BETHESDA_CLASSES)),
        (Role.CYTOTECHNOLOGIST, {"NILM"}),
        (Role.VIEWER, set()),
    ],
)
def test_who_may_sign_out_what(user_with_role, role: Role, allowed: set[str]) -> None:
    user = user_with_role(role)
    assert user_roles(user) == {role}

    assert {c for c in BETHESDA_CLASSES if user_can_sign_out(user, c)} == allowed


@pytest.mark.django_db
def test_demo_data_is_idempotent_and_generates_images_without_data(
    settings, tmp_path: Path, monkeypatch, capsys
) -> None:
    settings.PAPREVIEW_DATA_DIR = tmp_path / "no-data-here"
    monkeypatch.setenv("PAPREVIEW_ADMIN_USER", "boss")
    monkeypatch.setenv("PAPREVIEW_ADMIN_PASSWORD", "a-long-demo-password")
    call_command("demo_data", "--slides", "2")
    first = capsys.readouterr().out
    assert "boss" in first and "a-long-demo-password" in first
    call_command("demo_data", "--slides", "2")
    second = capsys.readouterr().out
    assert "0 new" in second

    admin = User.objects.get(username="boss")
    assert admin.check_password("a-long-demo-password") and admin.is_superuser and admin.is_staff
    assert user_roles(admin) == {Role.ADMIN}
    for role in (Role.PATHOLOGIST, Role.CYTOTECHNOLOGIST, Role.VIEWER):
        assert user_roles(User.objects.get(username=role.value)) == {role}
    assert Patient.objects.count() == 1
    slides = list(Slide.objects.all())
    assert len(slides) == 2
    assert {(s.format, s.width, s.height) for s in slides} == {("png", 1376, 1020)}


@pytest.mark.django_db
def test_demo_data_loads_real_images_when_present(settings, tmp_path: Path) -> None:
    from tests.factories import image_bytes

    images = tmp_path / "cric" / "images"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"img{i}.jpg").write_bytes(image_bytes(fmt="JPEG", seed=i))
    (images / "cells.csv").write_text("not an image")
    settings.PAPREVIEW_DATA_DIR = tmp_path
    call_command("demo_data", "--slides", "2")
    assert sorted(Slide.objects.values_list("original_filename", flat=True)) == [
        "img0.jpg",
        "img1.jpg",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_runstack_serves_the_app_and_its_worker_consumes_the_filesystem_broker(
    tmp_path: Path,
) -> None:
    """What `make run` does on a bare machine: SQLite, no broker server, web + worker."""
    env = clean_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        PAPREVIEW_BROKER_DIR=str(tmp_path / "broker"),
        CELERY_BEAT_SCHEDULE_FILENAME=str(tmp_path / "beat-schedule"),
        MEDIA_ROOT=str(tmp_path / "media"),
        DJANGO_SETTINGS_MODULE="papreview.settings.base",
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=ROOT, check=True, timeout=120)
    port = _free_port()
    log = (tmp_path / "stack.log").open("w+")
    stack = subprocess.Popen(
        [*manage, "runstack", "--addr", f"127.0.0.1:{port}", "--web-workers", "1"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if _get(f"http://127.0.0.1:{port}/healthz") == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert _get(f"http://127.0.0.1:{port}/accounts/login/") == 200
        assert _get(f"http://127.0.0.1:{port}/static/admin/css/base.css") == 200

        token = secrets.token_hex(4)
        subprocess.run(
            [
                *manage,
                "shell",
                "-c",
                f"from papreview.core.tasks import worker_ping_task as t; t.delay('{token}')",
            ],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=60,
        )
        while (
            time.monotonic() < deadline and f"worker ping {token}" not in Path(log.name).read_text()
        ):
            time.sleep(0.5)
        output = Path(log.name).read_text()
        assert f"worker ping {token}" in output, output[-3000:]
        assert f"http://127.0.0.1:{port}" in output
        pids = {
            part.split(" pid ")[0].strip(): int(part.split(" pid ")[1])
            for part in output.split("Started: ")[1].splitlines()[0].split(",")
        }
        assert set(pids) == {"worker", "web"}
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=60)
        log.close()
    for pid in pids.values():  # the worker and the web server stopped with runstack
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
