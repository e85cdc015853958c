"""Private PostgreSQL and Redis instances for the fault tests and the load benchmark, and a
gunicorn server of the app on them. The machine's shared PostgreSQL (5432) and Redis (6379) are
never restarted: the faults happen to these throwaway ones.

PostgreSQL: `initdb` into a temporary folder (as the `postgres` OS user when we are root, since
initdb refuses to run as root), `pg_ctl start/restart/stop` on a free port. Redis:
`redis-server --save "" --appendonly no` (no persistence, like the shared one), restartable.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _pg_bin() -> Path:
    """The newest installed PostgreSQL server binaries (Debian layout), or PG_BIN."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket()) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def tools_available() -> bool:
    return (PG_BIN / "initdb").exists() and shutil.which("redis-server") is not None


class PrivatePostgres:
    def __init__(self, *, fsync: bool = False) -> None:
        self.fsync = fsync  # off for the fault tests (speed); on for the load benchmark
        self.root = Path(tempfile.mkdtemp(prefix="papreview-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.start()

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        result = subprocess.run([*prefix, *cmd], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")

    def _ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-t", "60",
            "-l", str(self.root / "server.log"), *extra, action,
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """A fast restart: open connections are cut, running transactions roll back."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._ctl("stop", "-m", "immediate")

    def url(self, dbname: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def copy_database(self, source_url: str, dbname: str) -> str:
        """A new database here with the schema and rows of `source_url` (pg_dump | pg_restore),
        much faster than running every migration again."""
        self._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), dbname)
        dump = subprocess.run(
            ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", source_url],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(
            ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
             "--dbname", self.url(dbname)],
            input=dump, capture_output=True, check=True,
        )  # fmt: skip
        return self.url(dbname)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again: with no persistence, everything it held is gone."""
        self.stop()
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        self.stop()


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class NginxProxy:
    """Debian's nginx with the deployment's own config (docker/nginx.conf) in front of an app on
    127.0.0.1:`upstream_port` (its upstream and port substituted, nothing else changed)."""

    def __init__(self, upstream_port: int) -> None:
        if not Path(NGINX).exists():
            raise RuntimeError(f"{NGINX} is missing: apt-get install nginx (make nginx)")
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="papreview-nginx-"))
        conf = (ROOT / "docker" / "nginx.conf").read_text()
        conf = conf.replace("server web:8000;", f"server 127.0.0.1:{upstream_port};")
        conf = conf.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        (self.prefix / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", "nginx.conf", "-e", "stderr",
             "-g", f"daemon off; pid {self.prefix / 'nginx.pid'};"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port, timeout=30)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.prefix, ignore_errors=True)


class AppServer:
    """`gunicorn papreview.wsgi` on 127.0.0.1 with the given environment."""

    def __init__(self, env: dict[str, str], *, workers: int = 2, threads: int = 4) -> None:
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="papreview-gunicorn-", suffix=".log")[1])
        self._log_fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "papreview.wsgi:application",
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
             "--threads", str(threads), "--worker-class", "gthread", "--timeout", "60",
             "--graceful-timeout", "5", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_port(self.port, timeout=60)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=20)
        self._log_fh.close()
        self.log.unlink(missing_ok=True)


def app_env(database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "papreview.settings.test",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


SEED = r"""
import hashlib, json, sys
import django
django.setup()
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from papreview.accounts.roles import Role
from papreview.accounts.services import user_create
from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.review.models import Cell, ReviewStatus

reviewers, cells_each, tag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for role in Role:
    Group.objects.get_or_create(name=role.value)
patient = Patient.objects.create(identifier=f"LOAD-{tag}")
out = []
for i in range(reviewers):
    # One slide per reviewer, as in use (a cell edit locks its slide's row).
    slide = Slide.objects.create(
        patient=patient, file=f"slides/load/{tag}-{i}.png", original_filename="load.png",
        format="png", kind="field", width=10000, height=10000,
        sha256=hashlib.sha256(f"{tag}-{i}".encode()).hexdigest(), status=SlideStatus.IN_REVIEW,
    )
    role = Role.PATHOLOGIST if i % 2 == 0 else Role.CYTOTECHNOLOGIST
    user = user_create(username=f"{tag}-rev{i}", password=None, role=role)
    token, _ = Token.objects.get_or_create(user=user)
    cells = Cell.objects.bulk_create(
        Cell(slide=slide, run=None, x=10 * j, y=10, width=8, height=8, predicted_class="",
             current_class="NILM", review_status=ReviewStatus.ADDED, version=1)
        for j in range(cells_each)
    )
    out.append({"token": token.key, "slide": slide.pk, "cells": [c.pk for c in cells]})
print(json.dumps({"reviewers": out}))
"""


@contextlib.contextmanager
def bench_app_env(media_prefix: str) -> Iterator[tuple[dict[str, str], Path, PrivatePostgres]]:
    """For a benchmark: a private PostgreSQL (database `bench`, migrated) and Redis, and the app's
    production-like environment on them (DEBUG off, a fresh secret key, media in a temporary
    folder). Yields (env, media folder, the PostgreSQL); everything is removed afterwards."""
    pg, redis = PrivatePostgres(), PrivateRedis()
    media = Path(tempfile.mkdtemp(prefix=media_prefix))
    try:
        pg._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "bench")
        env = app_env(
            pg.url("bench"),
            redis.url(0),
            DJANGO_SETTINGS_MODULE="papreview.settings.base",  # honours MEDIA_ROOT from the env
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(50),  # a fresh one per run, never in the tree
            MEDIA_ROOT=str(media),
            CONN_MAX_AGE="600",
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT, env=env, check=True,
        )  # fmt: skip
        yield env, media, pg
    finally:
        redis.close()
        pg.close()
        shutil.rmtree(media, ignore_errors=True)


def run_script(script: str, *args: str, env: dict[str, str], timeout: float = 600) -> Any:
    """Run `python -c script args...` in the repository with `env`; the JSON of its last output
    line (a script that fails raises with its error output)."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def subprocess_db_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess that uses the running test's database (its test
    settings, the database pytest-django made)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "papreview.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        **extra,
    }


def seed_reviewers(
    env: dict[str, str], reviewers: int, cells_each: int, tag: str
) -> dict[str, Any]:
    """Reviewers with tokens, each with a slide in review and cells on it, in env's database."""
    seeded: dict[str, Any] = run_script(SEED, str(reviewers), str(cells_each), tag, env=env)
    return seeded


@contextlib.contextmanager
def private_stack(
    source_db_url: str, dbname: str = "papreview"
) -> Iterator[tuple[PrivatePostgres, PrivateRedis, str]]:
    pg = PrivatePostgres()
    redis = PrivateRedis()
    try:
        url = pg.copy_database(source_db_url, dbname)
        yield pg, redis, url
    finally:
        redis.close()
        pg.close()
