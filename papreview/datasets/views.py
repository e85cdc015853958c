"""Thin HTML views: dataset exports (list, new export, download), the model registry with its
compare page (evaluations on a chosen test export, activation by admins), the model dashboard
(review outcomes and reviewer agreement, charts) and the blind QC re-review form.

LoginRequiredMiddleware keeps anonymous users out; writes check roles in the services.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from inference.types import BETHESDA_CLASSES, CLASS_COLOURS
from papreview.accounts.roles import user_can_write, user_is_admin
from papreview.analysis.models import ModelStage
from papreview.core.exceptions import ApplicationError, PermissionDeniedError
from papreview.datasets.apis import export_file_response
from papreview.datasets.dashboard import model_dashboard
from papreview.datasets.models import QC_LABELS, EvaluationStatus
from papreview.datasets.params import ExportParams
from papreview.datasets.qc import (
    qc_refusal,
    qc_review_cells,
    qc_review_get,
    qc_review_submit,
    qc_reviews_open_to,
    qc_sample,
    qc_settings_get,
    qc_settings_set,
)
from papreview.datasets.registry import model_evaluation_request, model_version_activate_by
from papreview.datasets.selectors import (
    dataset_export_get,
    dataset_export_list,
    dataset_exports_ready,
    model_evaluation_list,
    model_version_get,
    model_version_list,
)
from papreview.datasets.services import dataset_export_create


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # LoginRequiredMiddleware
    return user


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return getattr(exc, "message", str(exc))


class ExportForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Exports of the same name are versioned.")
    signed_out_from = forms.DateField(required=False, label="Signed out from")
    signed_out_to = forms.DateField(required=False, label="to")
    categories = forms.MultipleChoiceField(
        required=False,
        choices=[(c, c) for c in BETHESDA_CLASSES],
        widget=forms.CheckboxSelectMultiple,
        label="Slide interpretation",
    )
    patients = forms.CharField(
        required=False, label="Patients", help_text="Identifiers, comma-separated (any if empty)."
    )
    tile_size = forms.IntegerField(initial=ExportParams.tile_size, min_value=64, max_value=8192)
    tile_overlap = forms.IntegerField(initial=ExportParams.tile_overlap, min_value=0)
    empty_tile_ratio = forms.FloatField(
        initial=ExportParams.empty_tile_ratio, min_value=0, max_value=1
    )
    crop_size = forms.IntegerField(initial=ExportParams.crop_size, min_value=16, max_value=1024)
    seed = forms.IntegerField(initial=0, label="Split seed")


@require_http_methods(["GET", "HEAD", "POST"])
def export_list(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if request.method == "POST" and not user_can_write(user):
        raise PermissionDenied("Your role can read exports but not make them.")
    form = ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            export = dataset_export_create(
                name=d["name"],
                created_by=user,
                filters={
                    "signed_out_from": d["signed_out_from"],
                    "signed_out_to": d["signed_out_to"],
                    "categories": d["categories"],
                    "patients": [p.strip() for p in d["patients"].split(",") if p.strip()],
                },
                params={
                    k: d[k] for k in ("tile_size", "tile_overlap", "empty_tile_ratio", "crop_size")
                }
                | {"seed": d["seed"]},
            )
        except PermissionDeniedError as exc:
            raise PermissionDenied(exc.message) from exc
        except (ApplicationError, ValidationError) as exc:
            form.add_error(None, _error_text(exc))
        else:
            messages.success(request, f"Export {export} queued.")
            return redirect("export-list-page")
    return render(
        request,
        "datasets/exports.html",
        {"form": form, "exports": dataset_export_list()[:100], "can_write": user_can_write(user)},
    )


@require_safe
def export_download(request: HttpRequest, export_id: int) -> FileResponse:
    try:
        return export_file_response(dataset_export_get(export_id=export_id))
    except ApplicationError as exc:
        raise Http404(exc.message) from exc


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
    evaluations = (
        {e.model_version_id: e for e in model_evaluation_list(export_id=chosen.pk)}
        if chosen
        else {}
    )
    stages = []
    for stage in ModelStage:
        versions = []
        for mv in model_version_list().filter(stage=stage):
            ev = evaluations.get(mv.pk)
            matrix = None
            if ev is not None and ev.status == EvaluationStatus.DONE:
                m = ev.metrics
                if stage == ModelStage.CLASSIFIER and "six_class" in m:
                    six = m["six_class"]
                    matrix = {
                        "columns": six["classes"],
                        "rows": _matrix_rows(six["classes"], six["confusion_matrix"]),
                    }
                elif "confusion" in m:
                    matrix = {
                        "columns": m["confusion"]["columns"],
                        "rows": _matrix_rows(m["confusion"]["rows"], m["confusion"]["matrix"]),
                    }
            versions.append({"mv": mv, "evaluation": ev, "matrix": matrix})
        stages.append({"stage": stage, "label": stage.label, "versions": versions})
    return render(
        request,
        "datasets/models.html",
        {
            "exports": exports,
            "chosen": chosen,
            "stages": stages,
            "is_admin": user_is_admin(request.user),
        },
    )


@require_POST
def model_activate(request: HttpRequest, version_id: int) -> HttpResponse:
    try:
        mv = model_version_activate_by(
            model_version=model_version_get(version_id=version_id), by=_user(request)
        )
    except PermissionDeniedError as exc:
        raise PermissionDenied(exc.message) from exc
    except ApplicationError as exc:
        raise Http404(exc.message) from exc
    messages.success(request, f"{mv.name} is now the active {mv.stage}; new analyses use it.")
    return redirect(request.POST.get("next") or "model-registry")


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


class QCShareForm(forms.Form):
    share = forms.FloatField(min_value=0, max_value=1, label="QC share (0-1)")


@require_http_methods(["GET", "HEAD", "POST"])
def dashboard(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    is_admin = user_is_admin(user)
    form = QCShareForm(request.POST or None, initial={"share": qc_settings_get().share})
    if request.method == "POST":
        if not is_admin:
            raise PermissionDenied("Only an administrator may change QC settings.")
        if request.POST.get("action") == "sample":
            drawn = qc_sample()
            messages.success(request, f"{len(drawn)} slide(s) drawn for QC re-review.")
            return redirect("model-dashboard")
        if form.is_valid():
            qc_settings_set(share=form.cleaned_data["share"], by=user)
            messages.success(request, "QC share saved.")
            return redirect("model-dashboard")
    data = model_dashboard()
    agreement = data["agreement"]
    kappa_rows = [
        {
            "key": key,
            "title": title,
            "n": agreement[key]["n"],
            "agreement": agreement[key]["observed_agreement"],
            "kappa": agreement[key]["kappa"],
            "per_class": [agreement[key]["per_class"][lab]["kappa"] for lab in agreement["labels"]],
        }
        for key, title in (
            ("reviewer_vs_reviewer", "Reviewer vs reviewer (QC re-review)"),
            ("reviewer_vs_model", "Reviewer vs model (cells a reviewer decided)"),
            ("qc_reviewer_vs_model", "QC reviewer vs model"),
        )
    ]
    stage_tables = [
        {
            "title": ModelStage(stage).label,
            "versions": [
                {
                    "version": v["version"],
                    "rows": [
                        (c, [v["classes"][c][o] for o in data["outcomes"]]) for c in data["classes"]
                    ],
                }
                for v in data[stage]
            ],
        }
        for stage in ("detector", "classifier")
    ]
    return render(
        request,
        "datasets/dashboard.html",
        {
            "data": data,
            "kappa_rows": kappa_rows,
            "stage_tables": stage_tables,
            "colours": CLASS_COLOURS,
            "form": form,
            "is_admin": is_admin,
            "pending": list(qc_reviews_open_to(user)[:50]),
        },
    )


@require_http_methods(["GET", "HEAD", "POST"])
def qc_review(request: HttpRequest, qc_review_id: int) -> HttpResponse:
    user = _user(request)
    try:
        review = qc_review_get(qc_review_id=qc_review_id)
    except ApplicationError as exc:
        raise Http404(exc.message) from exc
    refusal = qc_refusal(qc_review=review, by=user)
    if refusal:
        raise PermissionDenied(refusal)
    cells = list(qc_review_cells(review))
    error = ""
    if request.method == "POST":
        labels = {c.pk: request.POST.get(f"cell-{c.pk}", "") for c in cells}
        try:
            qc_review_submit(qc_review=review, by=user, labels=labels)
        except PermissionDeniedError as exc:
            raise PermissionDenied(exc.message) from exc
        except (ApplicationError, ValidationError) as exc:
            error = _error_text(exc)
        else:
            messages.success(request, "QC review saved. Thank you.")
            return redirect("model-dashboard")
    return render(
        request,
        "datasets/qc_review.html",
        {"review": review, "cells": cells, "labels": QC_LABELS, "error": error},
    )
