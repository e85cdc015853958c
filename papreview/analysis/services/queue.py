"""Queueing an analysis (the outbox): `analysis_request` creates a queued run in the caller's
transaction, and `analysis_publish` hands its job to the broker on commit and records that it did.
A job the broker did not take stays unpublished until the sweeper (sweep.py) sends it."""

from __future__ import annotations

import functools
import logging

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from papreview.accounts.roles import user_can_write
from papreview.analysis.errors import AnalysisInProgressError
from papreview.analysis.models import AnalysisRun, RunStatus
from papreview.analysis.selectors import ACTIVE_RUN_STATUSES, analysis_run_active
from papreview.cases.models import Slide, SlideStatus
from papreview.cases.services import slide_transition
from papreview.core.exceptions import PermissionDeniedError

logger = logging.getLogger(__name__)


def analysis_request(*, slide: Slide, requested_by: User | None = None) -> AnalysisRun:
    """Queue an analysis of the slide: a queued run now, its job sent to the broker on commit.

    A first analysis leaves the slide `uploaded` until the broker has the job (then `queued`);
    a re-run (analysed, in review or failed) moves it to `queued` at once, so nobody edits cells
    while they are being replaced. Raises AnalysisInProgressError when the slide already has an
    unfinished run, IllegalTransitionError for a signed-out slide, PermissionDeniedError for a
    user who may not write.
    """
    if requested_by is not None and not user_can_write(requested_by):
        raise PermissionDeniedError("Your role can read slides but not start analyses.")
    with transaction.atomic():
        locked = Slide.objects.select_for_update().get(pk=slide.pk)
        active = analysis_run_active(slide_id=locked.pk)
        if active is not None:
            doing = "being analysed" if active.status == RunStatus.RUNNING else "queued"
            raise AnalysisInProgressError(
                f"Slide {locked.pk} is already {doing} (run {active.pk}). Wait for it to finish "
                "before starting another analysis.",
                extra={"run": active.pk},
            )
        if locked.status != SlideStatus.UPLOADED:
            slide_transition(slide=locked, to=SlideStatus.QUEUED)
        run = AnalysisRun.objects.create(
            slide=locked, status=RunStatus.QUEUED, requested_by=requested_by
        )
        transaction.on_commit(functools.partial(analysis_publish, run_id=run.pk), robust=True)
    slide.status = locked.status
    slide.failure_reason = locked.failure_reason
    return run


def analysis_publish(*, run_id: int) -> bool:
    """Hand a queued or running run's job to the broker; record that it was published.

    Never raises for a broker error: the run stays unpublished (or stale) and the sweeper sends
    it again. Returns whether the broker accepted the job.
    """
    from papreview.analysis.tasks import analysis_run_task  # tasks import this module

    run = AnalysisRun.objects.filter(pk=run_id, status__in=ACTIVE_RUN_STATUSES).first()
    if run is None:
        return False
    try:
        # No time limits in the message: each worker applies its own settings (a CPU machine
        # may allow a slide longer than a GPU machine). No publish retries: the outbox retries.
        result = analysis_run_task.apply_async(
            kwargs={"slide_id": run.slide_id},
            retry=False,
            time_limit=None,
            soft_time_limit=None,
        )
    except Exception as exc:  # any broker failure: the outbox keeps the job
        logger.warning(
            "run %s of slide %s: the broker did not take the job (%s: %s); the sweeper will "
            "send it again",
            run.pk,
            run.slide_id,
            type(exc).__name__,
            exc,
        )
        return False
    now = timezone.now()
    AnalysisRun.objects.filter(pk=run.pk).update(published_at=now, updated_at=now)
    # A first analysis: the slide is queued now that its job is on the broker. Only from
    # `uploaded`: the worker may already have moved it on (the row lock waits for the worker's
    # transaction, and the status is then read again).
    with transaction.atomic():
        slide = (
            Slide.objects.select_for_update()
            .only("pk", "status")
            .filter(pk=run.slide_id, status=SlideStatus.UPLOADED)
            .first()
        )
        if slide is not None:
            slide_transition(slide=slide, to=SlideStatus.QUEUED)
    logger.info("run %s of slide %s published as task %s", run.pk, run.slide_id, result.id)
    return True
