"""Two simulated hosts (network namespaces with veth links, or loopback addresses without
CAP_NET_ADMIN), a worker on each against the shared PostgreSQL, Redis and S3 server; one host's
worker is killed mid-run and every one of 20 slides is analysed exactly once by the survivor.
Runs benchmarks/multihost.py (its own database, `<test database>_multihost`) and reads its
figures; about 40 s here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from testkit.workers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_host_lost_mid_run_every_slide_is_analysed_exactly_once() -> None:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs the shared PostgreSQL")
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}_multihost"
    broker = urlunsplit(urlsplit(settings.CELERY_BROKER_URL))
    env = {**os.environ, "DATABASE_URL": url, "CELERY_BROKER_URL": broker}
    done = subprocess.run(
        [sys.executable, "benchmarks/multihost.py", "--slides", "20"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = done.stdout.strip().splitlines()[-1]
    print(summary)  # the time to recover, in the test's output (-s)
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["problems"] == []
    assert sum(result["completed_by_host"].values()) == 20
    assert result["completed_by_host"]["b"] >= 1 and result["files_in_local_media"] == 0
    assert result["time_to_recover_s"] > 0
