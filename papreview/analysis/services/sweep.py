"""The sweeper (celery beat): publishes runs the broker never took, re-sends queued runs whose
message was lost, and re-sends or fails running runs whose worker died."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from papreview.analysis.models import AnalysisRun, RunStatus
from papreview.analysis.selectors import (
    analysis_runs_stale,
    analysis_runs_unpublished,
    analysis_runs_unstarted,
)
from papreview.analysis.services.queue import analysis_publish
from papreview.analysis.services.run import run_fail, slide_execution_lock

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    published: list[int] = field(default_factory=list)  # run ids sent to the broker (outbox)
    resent: list[int] = field(default_factory=list)  # stale running runs sent again
    failed: list[int] = field(default_factory=list)  # stale runs out of attempts
    busy: list[int] = field(default_factory=list)  # stale heartbeat but a live process holds it
    # queued runs published long ago and never started (message lost by the broker), sent again
    republished: list[int] = field(default_factory=list)


def analysis_sweep(*, now: datetime | None = None) -> SweepReport:
    """Send jobs that never reached the broker, and re-send or fail runs stuck in `running`.

    * queued runs unpublished for ANALYSIS_PUBLISH_GRACE_S (broker down at upload) are published;
    * running runs without a heartbeat for ANALYSIS_STALE_AFTER_S whose execution lock is free
      (their worker is dead) are re-sent, or failed once they used ANALYSIS_MAX_ATTEMPTS starts.
    """
    now = now or timezone.now()
    report = SweepReport()
    grace = timedelta(seconds=settings.ANALYSIS_PUBLISH_GRACE_S)
    for run_id in analysis_runs_unpublished(created_before=now - grace).values_list(
        "pk", flat=True
    ):
        if analysis_publish(run_id=run_id):
            report.published.append(run_id)
    # A broker restarted without persistence (Redis with --save "") loses the jobs it held: a
    # queued run that no worker started long after it was published is sent again. A duplicate
    # is harmless (the task is idempotent: the run executes once); publishing bumps published_at,
    # so a run waiting in a long queue is re-sent at most once per period.
    requeue_after = timedelta(seconds=settings.ANALYSIS_REQUEUE_AFTER_S)
    for run_id in analysis_runs_unstarted(published_before=now - requeue_after).values_list(
        "pk", flat=True
    ):
        if analysis_publish(run_id=run_id):
            report.republished.append(run_id)
    stale_after = timedelta(seconds=settings.ANALYSIS_STALE_AFTER_S)
    for run in analysis_runs_stale(heartbeat_before=now - stale_after):
        with slide_execution_lock(slide_id=run.slide_id) as taken:
            if not taken:
                report.busy.append(run.pk)
                continue
            if run.attempts >= settings.ANALYSIS_MAX_ATTEMPTS:
                run_fail(
                    run_id=run.pk,
                    reason=(
                        f"The analysis stopped responding {run.attempts} times (worker lost or "
                        "out of time). The slide may be too large for the workers; ask an "
                        "administrator."
                    ),
                )
                report.failed.append(run.pk)
                continue
        # Outside the lock: the worker that takes the job must be able to take the lock. The
        # heartbeat restarts the deadline, so the next sweeps do not send it again meanwhile.
        if analysis_publish(run_id=run.pk):
            AnalysisRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
                heartbeat_at=timezone.now()
            )
            report.resent.append(run.pk)
    if report.published or report.resent or report.failed or report.republished:
        logger.info("analysis sweep: %s", report)
    return report
