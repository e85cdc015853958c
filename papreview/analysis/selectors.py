"""Reads for model versions and analysis runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import F, Q, QuerySet

from papreview.analysis.models import AnalysisRun, ModelStage, ModelVersion, RunStatus

ACTIVE_RUN_STATUSES: tuple[str, ...] = (RunStatus.QUEUED, RunStatus.RUNNING)


def model_version_active(*, stage: ModelStage | str) -> ModelVersion | None:
    """The active version of a stage, or None when none was activated yet."""
    return ModelVersion.objects.filter(stage=stage, is_active=True).first()


def analysis_run_active(*, slide_id: int) -> AnalysisRun | None:
    """The slide's unfinished (queued or running) run; there is at most one."""
    return (
        AnalysisRun.objects.filter(slide_id=slide_id, status__in=ACTIVE_RUN_STATUSES)
        .order_by("-created_at", "-id")
        .first()
    )


def analysis_run_list(*, slide_id: int) -> QuerySet[AnalysisRun]:
    """A slide's runs, newest first, with their model versions (not the boxes they set aside:
    up to 20,000 each, `analysis_run_set_aside_boxes` reads them)."""
    return (
        AnalysisRun.objects.filter(slide_id=slide_id)
        .select_related("detector_version", "classifier_version", "requested_by")
        .defer("set_aside_boxes")
        .order_by("-created_at", "-id")
    )


def _latest_finished_run(slide_id: int, *fields: str) -> AnalysisRun | None:
    return (
        AnalysisRun.objects.filter(slide_id=slide_id, status=RunStatus.SUCCEEDED)
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .only(*fields)
        .first()
    )


def analysis_run_set_aside(*, slide_id: int) -> int:
    """How many candidates the slide's latest finished run set aside as not cells (leukocytes,
    debris: `inference.types.NOT_A_CELL`), not shown as cells; 0 before any run."""
    run = _latest_finished_run(slide_id, "timings")
    return int(run.timings.get("set_aside", 0)) if run is not None else 0


@dataclass(frozen=True)
class SetAside:
    count: int  # how many the run set aside
    boxes: list[list[int]]  # the level-0 boxes kept of them (the first SET_ASIDE_BOXES_MAX)


def analysis_run_set_aside_boxes(*, slide_id: int) -> SetAside:
    """The candidates the slide's latest finished run set aside as not cells, for a reviewer
    who wants to see them; none before any run (or from a run older than this record)."""
    run = _latest_finished_run(slide_id, "timings", "set_aside_boxes")
    if run is None:
        return SetAside(0, [])
    return SetAside(int(run.timings.get("set_aside", 0)), list(run.set_aside_boxes))


def analysis_runs_unpublished(*, created_before: datetime) -> QuerySet[AnalysisRun]:
    """Queued runs whose job never reached the broker (the outbox), oldest first."""
    return AnalysisRun.objects.filter(
        status=RunStatus.QUEUED, published_at__isnull=True, created_at__lt=created_before
    ).order_by("created_at", "id")


def analysis_runs_unstarted(*, published_before: datetime) -> QuerySet[AnalysisRun]:
    """Queued runs sent to the broker before `published_before` that no worker has started: their
    message may be lost (a broker restarted without persistence), oldest first."""
    return AnalysisRun.objects.filter(
        status=RunStatus.QUEUED, published_at__lt=published_before, started_at__isnull=True
    ).order_by("published_at", "id")


def analysis_runs_stale(*, heartbeat_before: datetime) -> QuerySet[AnalysisRun]:
    """Running runs with no sign of life since `heartbeat_before`, oldest first."""
    return AnalysisRun.objects.filter(
        Q(heartbeat_at__lt=heartbeat_before)
        | Q(heartbeat_at__isnull=True, updated_at__lt=heartbeat_before),
        status=RunStatus.RUNNING,
    ).order_by("heartbeat_at", "id")
