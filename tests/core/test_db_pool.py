"""Bounded PostgreSQL connections: with DB_POOL_MAX_SIZE a process holds at most that many
connections however many threads query (Django's psycopg pool), and waits for a free one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from django.db import connection

from testkit.workers import ROOT

pytestmark = pytest.mark.django_db


def _probe(**env: str) -> dict:
    db = connection.settings_dict
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's")
    done = subprocess.run(
        [sys.executable, "testkit/pool_probe.py"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "papreview.settings.test",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "PGAPPNAME": f"pool-test-{uuid.uuid4().hex[:8]}",
            "PYTHONPATH": str(ROOT),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_pooled_process_never_holds_more_than_the_pool_size() -> None:
    result = _probe(DB_POOL_MAX_SIZE="2", DB_POOL_MIN_SIZE="1")
    assert result["pool"]["max_size"] == 2
    assert result["done"] == 8  # every thread got its turn
    assert 1 <= result["peak"] <= 2


def test_without_a_pool_each_thread_opens_its_own_connection() -> None:
    result = _probe(DB_POOL_MAX_SIZE="0")
    assert result["pool"] is None and result["done"] == 8
    assert result["peak"] > 2
