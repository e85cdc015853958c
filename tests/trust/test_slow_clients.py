"""Row 3: slow clients cannot starve the app. gunicorn with sync workers, as deployed, is held by
a few clients that send their headers slowly (slowloris): shown first, straight to gunicorn.
Behind nginx with the very config of docker/compose.yaml (docker/nginx.conf), the same clients
and more get nowhere and /healthz answers at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from testkit.stack import NginxProxy, free_port, wait_port

REPO = Path(__file__).resolve().parents[2]


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


def test_slow_clients_starve_bare_gunicorn_but_not_the_proxy(gunicorn: int) -> None:
    held = slow_clients(gunicorn, 3)
    try:
        assert not answers(gunicorn), "bare gunicorn answered: the probe's finding is gone?"
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)
    assert answers(gunicorn)

    proxy = NginxProxy(gunicorn)  # the very config of docker/compose.yaml
    try:
        held = slow_clients(proxy.port, 20)
        try:
            started = time.monotonic()
            assert answers(proxy.port), "the proxy let slow clients hold the app"
            took = time.monotonic() - started
            print(f"/healthz through nginx beside 20 slow clients: {took:.2f} s")
        finally:
            for s in held:
                s.close()
    finally:
        proxy.close()
