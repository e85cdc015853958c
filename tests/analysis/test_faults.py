"""Faults on real services, nothing lost.

* PostgreSQL restarted (pg_ctl restart -m fast) while six reviewers edit cells through a gunicorn
  server: refused requests are a clear 503 the reviewers retry; every acknowledged edit is in
  the database afterwards, and no cell changed without a revision.
* Two reviewers send the same version of one cell at once: one wins, the other gets 409 with the
  winner's cell; nothing is overwritten.
* Redis restarted with an analysis job queued (no persistence: the message is lost): the
  sweeper sends it again; a worker SIGKILLed mid-run is replaced, the job is redelivered and
  completes once, with no duplicate cells.

PostgreSQL and Redis here are private instances (testkit/stack.py); the machine's shared
ones are never restarted.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from papreview.accounts.roles import Role
from papreview.analysis.models import AnalysisRun, RunStatus
from papreview.analysis.services import analysis_sweep
from papreview.cases.models import Slide, SlideStatus
from papreview.celery import celery_app
from papreview.review.models import Cell
from papreview.uploads.services import slide_upload
from testkit.images import field_bytes
from testkit.reviewers import EditLog, lost_edits, run_reviewers
from testkit.stack import (
    AppServer,
    PrivatePostgres,
    PrivateRedis,
    app_env,
    private_stack,
    seed_reviewers,
)
from testkit.workers import Worker, wait_for, worker_env
from tests.factories import PatientFactory, UserFactory, upload

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
    pytest.mark.slow,
]


@pytest.fixture(autouse=True)
def role_groups() -> None:
    for role in Role:  # a flushed database lacks the data migration's groups
        Group.objects.get_or_create(name=role.value)


def _test_db_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="module")
def stack(
    django_db_setup: None, django_db_blocker: Any
) -> Iterator[tuple[PrivatePostgres, PrivateRedis, str]]:
    with django_db_blocker.unblock(), private_stack(_test_db_url()) as stack:
        yield stack


@pytest.fixture(scope="module")
def server(stack: tuple[PrivatePostgres, PrivateRedis, str]) -> Iterator[AppServer]:
    _pg, redis, url = stack
    app = AppServer(app_env(url, redis.url(1)), workers=2, threads=4)
    for _ in range(4):  # load the app in both workers before the tests time anything
        requests.get(f"{app.base_url}/healthz", timeout=60)
    try:
        yield app
    finally:
        app.close()


def test_postgres_restart_while_reviewers_edit_loses_no_acknowledged_edit(
    stack: tuple[PrivatePostgres, PrivateRedis, str], server: AppServer
) -> None:
    pg, redis, url = stack
    seeded = seed_reviewers(app_env(url, redis.url(1)), reviewers=6, cells_each=4, tag="pgr")
    log = EditLog()
    threads = run_reviewers(base_url=server.base_url, seeded=seeded, seconds=8.0, log=log)
    wait_for(lambda: len(log.acked) >= 20, timeout=30, what="edits before the restart")
    acked_before = len(log.acked)
    pg.restart()
    restarted_at = len(log.acked)
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    summary = (
        f"statuses {dict(log.statuses)}, retries {log.retries}, acked {len(log.acked)} "
        f"({acked_before} before the restart), late {len(log.late)}"
    )
    print(summary)
    assert not log.errors, f"{log.errors[:10]} ({summary})"
    assert acked_before >= 10 and len(log.acked) >= restarted_at + 10, summary
    assert set(log.statuses) <= {200, 409, 503}, f"only clear answers: {summary}"
    assert log.statuses[500] == 0
    assert lost_edits(url, log) == [], summary
    assert "Traceback" not in server.output()


def test_two_reviewers_on_one_cell_the_second_gets_409(
    stack: tuple[PrivatePostgres, PrivateRedis, str], server: AppServer
) -> None:
    _pg, redis, url = stack
    seeded = seed_reviewers(app_env(url, redis.url(1)), reviewers=2, cells_each=1, tag="two")
    cell = seeded["reviewers"][0]["cells"][0]
    barrier = threading.Barrier(2)
    answers: dict[str, requests.Response] = {}

    def edit(who: int, new_class: str) -> None:
        token = seeded["reviewers"][who]["token"]
        barrier.wait()
        answers[new_class] = requests.patch(
            f"{server.base_url}/api/cells/{cell}/",
            json={"version": 1, "current_class": new_class},
            headers={"Authorization": f"Token {token}"},
            timeout=30,
        )

    threads = [threading.Thread(target=edit, args=a) for a in ((0, "HSIL"), (1, "LSIL"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(r.status_code for r in answers.values()) == [200, 409]
    winner = next(c for c, r in answers.items() if r.status_code == 200)
    loser = next(r for r in answers.values() if r.status_code == 409)
    body = loser.json()
    assert body["code"] == "stale_version" and body["current"]["current_class"] == winner
    assert body["current"]["version"] == 2
    log = EditLog(acked=[(cell, 2, {"current_class": winner})])
    assert lost_edits(url, log) == []
    after = requests.get(
        f"{server.base_url}/api/cells/{cell}/revisions/",
        headers={"Authorization": f"Token {seeded['reviewers'][0]['token']}"},
        timeout=30,
    ).json()
    assert [r["after"]["current_class"] for r in after["results"]] == [winner]


@contextlib.contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Point this process's Celery app at another broker (and drop its pooled connections)."""

    def reset() -> None:
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    original = celery_app.conf.broker_write_url
    reset()
    celery_app.conf.broker_write_url = url
    try:
        yield
    finally:
        reset()
        celery_app.conf.broker_write_url = original


def _worker_env(broker_url: str, media_root: Path, weights: tuple[Path, Path]) -> dict[str, str]:
    return worker_env(_test_db_url(), broker_url, media_root, weights)


def test_redis_restart_with_a_job_queued_then_a_worker_killed_mid_run(
    stack: tuple[PrivatePostgres, PrivateRedis, str],
    settings: Any,
    media_root: Path,
    tiny_weights: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    _pg, redis, _url = stack
    broker = redis.url(2)
    settings.ANALYSIS_DEFAULT_DETECTOR, settings.ANALYSIS_DEFAULT_CLASSIFIER = tiny_weights
    queue = redis_lib.Redis.from_url(broker)
    pathologist = UserFactory.create(role=Role.PATHOLOGIST)
    with broker_at(broker):
        # 2048 px: 64 detector tiles of 256 px, one per batch: long enough to kill mid-run.
        slide = slide_upload(
            patient=PatientFactory.create(),
            file=upload("large.png", field_bytes(2048, 2048, seed=5)),
            uploaded_by=pathologist,
        )
        run = AnalysisRun.objects.get(slide=slide)
        assert run.published_at is not None and queue.llen("inference") == 1

        redis.restart()  # no persistence: the queued job is gone
        assert queue.llen("inference") == 0
        assert AnalysisRun.objects.get(pk=run.pk).status == RunStatus.QUEUED
        later = timezone.now() + timedelta(seconds=django_settings.ANALYSIS_REQUEUE_AFTER_S + 1)
        report = analysis_sweep(now=later)
        assert report.republished == [run.pk], report
        assert queue.llen("inference") == 1

    env = _worker_env(broker, media_root, tiny_weights)
    first = Worker("trust-1", env, tmp_path / "worker-1.log")
    second: Worker | None = None
    try:
        first.wait_ready()

        def mid_run() -> AnalysisRun | None:
            current = AnalysisRun.objects.get(pk=run.pk)
            return (
                current if current.status == RunStatus.RUNNING and current.tiles_done >= 2 else None
            )

        before = wait_for(mid_run, timeout=90, interval=0.02, what="the run to be part done")
        first.kill()
        assert before.tiles_done < before.tiles_total, "killed before the end"
        assert not Cell.objects.filter(slide=slide).exists()

        second = Worker("trust-2", env, tmp_path / "worker-2.log")
        second.wait_ready()

        def finished() -> Slide | None:
            current = Slide.objects.get(pk=slide.pk)
            done = (SlideStatus.ANALYSED, SlideStatus.FAILED)
            return current if current.status in done else None

        try:
            done = wait_for(finished, timeout=120, interval=0.2, what="the slide analysed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{second.output()[-4000:]}") from exc
        assert done.status == SlideStatus.ANALYSED, done.failure_reason
        final = AnalysisRun.objects.get(slide=slide)  # still one run
        assert final.pk == run.pk and final.status == RunStatus.SUCCEEDED
        assert final.attempts == 2, "the killed attempt and the one that finished"
        boxes = list(Cell.objects.filter(slide=slide).values_list("x", "y", "width", "height"))
        assert boxes and len(set(boxes)) == len(boxes), "no cell written twice"
    finally:
        first.stop()
        if second is not None:
            second.stop()
