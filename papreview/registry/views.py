"""The Models page: versions of both stages with their evaluations on a chosen test export,
gated activation (a reason when a version is worse or not comparable) and one-click rollback,
both for admins. LoginRequiredMiddleware keeps anonymous users out; services check roles."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST, require_safe

from papreview.accounts.roles import user_is_admin
from papreview.analysis.models import ModelStage
from papreview.core.exceptions import ApplicationError, NotFoundError, PermissionDeniedError
from papreview.datasets.selectors import dataset_export_get, dataset_exports_ready
from papreview.datasets.views import _error_text, _user
from papreview.registry.activation import model_version_activate_by, model_version_rollback_by
from papreview.registry.models import EvaluationStatus, RetrainJob, RetrainStatus
from papreview.registry.retrain import retrain_job_request
from papreview.registry.selectors import (
    model_evaluation_list,
    model_version_get,
    model_version_list,
)
from papreview.registry.services import model_evaluation_request


def _matrix_rows(classes: list[str], matrix: list[list[int]]) -> list[dict[str, Any]]:
    """Rows of a confusion matrix with each cell's share of its row (for shading)."""
    rows = []
    for name, counts in zip(classes, matrix, strict=True):
        total = sum(counts) or 1
        rows.append({"name": name, "cells": [(c, round(c / total, 3)) for c in counts]})
    return rows


@require_safe
def model_registry(request: HttpRequest) -> HttpResponse:
    """Versions of both stages; with ?export=ID their scores on that export's test split."""
    exports = list(dataset_exports_ready()[:100])
    chosen = None
    raw = request.GET.get("export", "")
    if raw.isdigit():
        chosen = next((e for e in exports if e.pk == int(raw)), None)
    # the latest evaluation of each version on the chosen export
    evaluations = (
        {
            e.model_version_id: e
            for e in model_evaluation_list(export_id=chosen.pk).order_by("updated_at", "id")
        }
        if chosen
        else {}
    )
    stages = []
    for stage in ModelStage:
        versions = []
        active = None
        for mv in model_version_list().filter(stage=stage):
            active = mv if mv.is_active else active
            ev = evaluations.get(mv.pk)
            matrix = None
            if ev is not None and ev.status == EvaluationStatus.DONE:
                four = ev.metrics.get("metrics", {}).get("matched_cells", {}).get("four_class")
                if four:
                    matrix = {
                        "columns": four["classes"],
                        "rows": _matrix_rows(four["classes"], four["confusion_matrix"]),
                    }
            versions.append({"mv": mv, "evaluation": ev, "matrix": matrix})
        stages.append(
            {
                "stage": stage,
                "label": stage.label,
                "versions": versions,
                # What the rollback button goes back to (None: nothing recorded).
                "rollback_to": active.previous if active is not None else None,
            }
        )
    jobs = list(RetrainJob.objects.select_related("export", "new_detector", "new_classifier")[:5])
    return render(
        request,
        "registry/models.html",
        {
            "retrain_jobs": jobs,
            # the page reloads itself while a job runs (its progress)
            "retrain_running": any(
                j.status in (RetrainStatus.QUEUED, RetrainStatus.RUNNING) for j in jobs
            ),
            "exports": exports,
            "chosen": chosen,
            "stages": stages,
            "is_admin": user_is_admin(request.user),
        },
    )


def _back(request: HttpRequest) -> str:
    """Where to go after a form on the Models page: its own address (a local path only)."""
    target = request.POST.get("next", "")
    same_site = url_has_allowed_host_and_scheme(
        target, allowed_hosts=None, require_https=request.is_secure()
    )  # a path on this site only: no scheme, no host, no "//" or "/\\" tricks
    return target if same_site and target.startswith("/") else "/models/"


@require_POST
def model_activate(request: HttpRequest, version_id: int) -> HttpResponse:
    try:
        mv = model_version_activate_by(
            model_version=model_version_get(version_id=version_id),
            by=_user(request),
            reason=request.POST.get("reason", ""),
        )
    except PermissionDeniedError as exc:
        raise PermissionDenied(exc.message) from exc
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    except ApplicationError as exc:  # refused by the gate: the figures, and what to do
        messages.error(request, exc.message)
        return redirect(_back(request))
    messages.success(request, f"{mv.name} is now the active {mv.stage}; new analyses use it.")
    return redirect(_back(request))


@require_POST
def model_rollback(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if not user_is_admin(user):
        raise PermissionDenied("Only an administrator may roll a model version back.")
    stage = request.POST.get("stage", "")
    if stage not in ModelStage.values:
        messages.error(request, "Choose the stage to roll back.")
        return redirect(_back(request))
    try:
        mv = model_version_rollback_by(stage=stage, by=user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(_back(request))
    messages.success(request, f"Rolled back: {mv.name} is the active {mv.stage} again.")
    return redirect(_back(request))


@require_POST
def model_evaluate(request: HttpRequest, version_id: int) -> HttpResponse:
    raw = request.POST.get("export", "")
    try:
        export = dataset_export_get(export_id=int(raw))
        model_evaluation_request(
            model_version=model_version_get(version_id=version_id),
            export=export,
            by=_user(request),
        )
    except PermissionDeniedError as exc:
        raise PermissionDenied(exc.message) from exc
    except (ApplicationError, ValueError) as exc:
        messages.error(request, _error_text(exc))
        return redirect("model-registry")
    messages.info(request, "Evaluation queued; reload the page in a moment.")
    return redirect(f"/models/?export={export.pk}")


@require_POST
def model_retrain(request: HttpRequest) -> HttpResponse:
    """Queue a retraining on the chosen export (admins only) on the `training` queue."""
    user = _user(request)
    if not user_is_admin(user):
        raise PermissionDenied("Only an administrator may retrain the models.")
    try:
        export = dataset_export_get(export_id=int(request.POST.get("export", "")))
        raw_epochs = request.POST.get("epochs", "").strip()
        epochs = int(raw_epochs) if raw_epochs else None
        if epochs is not None and not 1 <= epochs <= 1000:
            raise ValueError("Epochs must be between 1 and 1000.")
        job = retrain_job_request(
            export=export,
            by=user,
            from_scratch=bool(request.POST.get("from_scratch")),
            epochs=epochs,
        )
    except PermissionDeniedError as exc:
        raise PermissionDenied(exc.message) from exc
    except (ApplicationError, ValueError) as exc:
        messages.error(request, _error_text(exc))
        return redirect(_back(request))
    messages.info(request, f"Retrain #{job.pk} queued; this page shows its progress.")
    return redirect(_back(request))
