"""Row 3: slow clients cannot starve the app. gunicorn with sync workers, as deployed, is held by
a few clients that send their headers slowly (slowloris): shown first, straight to gunicorn.
Behind nginx with the very config of docker/compose.yaml (docker/nginx.conf), the same clients
and more get nowhere and /healthz answers at once."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def slow_clients(port: int, n: int) -> list[socket.socket]:
    """n connections that start a request and never finish its headers."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        socks.append(s)
    return socks


def answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code in (200, 503)
    except requests.RequestException:
        return False


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[int]:
    """The app under gunicorn as docker/entrypoint.sh runs it (sync workers), here with two."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "papreview.settings.base",
    }
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "papreview.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--timeout", "120"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port)
        deadline = time.monotonic() + 60  # the workers load Django after the port opens
        while not answers(port):
            assert time.monotonic() < deadline, "gunicorn never answered"
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_slow_clients_starve_bare_gunicorn_but_not_the_proxy(gunicorn: int, tmp_path: Path) -> None:
    assert Path(NGINX).exists(), "nginx is missing: make test installs it (apt)"
    held = slow_clients(gunicorn, 3)
    try:
        assert not answers(gunicorn), "bare gunicorn answered: the probe's finding is gone?"
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)
    assert answers(gunicorn)

    proxy_port = free_port()
    conf = (REPO / "docker" / "nginx.conf").read_text()
    conf = conf.replace("server web:8000;", f"server 127.0.0.1:{gunicorn};")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{proxy_port};")
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "nginx.conf").write_text(conf)
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path / "nginx"), "-c", "nginx.conf", "-e", "stderr",
         "-g", f"daemon off; pid {tmp_path / 'nginx' / 'nginx.pid'};"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_port(proxy_port)
        held = slow_clients(proxy_port, 20)
        try:
            started = time.monotonic()
            assert answers(proxy_port), "the proxy let slow clients hold the app"
            print(
                f"/healthz through nginx with 20 slow clients: {time.monotonic() - started:.2f} s"
            )
        finally:
            for s in held:
                s.close()
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)
