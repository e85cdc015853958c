"""Thin HTML views: dataset exports (list, new export with its parameters, download), the model
dashboard (review outcomes and reviewer agreement, charts) and the blind QC re-review form. The
Models page (compare, activate, roll back) is in `registry_views`.

LoginRequiredMiddleware keeps anonymous users out; writes check roles in the services.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_safe

from inference.types import BETHESDA_CLASSES, CLASS_COLOURS
from papreview.accounts.roles import user_can_write, user_is_admin
from papreview.analysis.models import ModelStage
from papreview.core.exceptions import ApplicationError, PermissionDeniedError
from papreview.datasets.apis import export_file_response
from papreview.datasets.dashboard import model_dashboard
from papreview.datasets.models import QC_LABELS
from papreview.datasets.params import PARAM_LIMITS, ExportParams
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
from papreview.datasets.selectors import dataset_export_get, dataset_export_list
from papreview.datasets.services import dataset_export_create


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # LoginRequiredMiddleware
    return user


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return getattr(exc, "message", str(exc))


def _default(name: str) -> Any:
    return getattr(ExportParams, name)


def _limits(name: str) -> dict[str, Any]:
    low, high = PARAM_LIMITS[name]
    return {"min_value": low, "max_value": high}


def _number(kind: Callable[..., Any], name: str, label: str, help_text: str = "") -> Any:
    default = _default(name)
    text = f"{help_text} Default {default}.".strip()
    return kind(initial=default, label=label, help_text=text, **_limits(name))


def _fraction(index: int, label: str) -> forms.FloatField:
    default = ExportParams.split[index]
    return forms.FloatField(
        initial=default, label=label, help_text=f"Default {default}.", **_limits("split")
    )


class ExportForm(forms.Form):
    """A new export: which slides (filter) and how they are written (parameters). Defaults and
    limits are those of `ExportParams` (papreview.datasets.params), which checks them again."""

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
    split_train = _fraction(0, "Train fraction")
    split_val = _fraction(1, "Val fraction")
    split_test = _fraction(2, "Test fraction")
    seed = forms.IntegerField(
        initial=_default("seed"),
        label="Split seed",
        help_text=f"Shuffles the patients. Default {_default('seed')}.",
    )
    tile_size = _number(forms.IntegerField, "tile_size", "Tile size (px)", "Whole-slide tiles.")
    tile_overlap = _number(
        forms.IntegerField, "tile_overlap", "Tile overlap (px)", "Under half a tile."
    )
    empty_tile_ratio = _number(
        forms.FloatField, "empty_tile_ratio", "Empty tile ratio", "Share of cell-less tiles kept."
    )
    crop_size = _number(forms.IntegerField, "crop_size", "Crop size (px)", "Classifier crops.")
    include_undecided = forms.BooleanField(
        required=False,
        initial=_default("include_undecided"),
        label="Include undecided cells",
        help_text="As pseudo-labels in the training formats. Default off.",
    )
    train_only = forms.BooleanField(
        required=False,
        initial=_default("train_only"),
        label="Train only",
        help_text="Every patient in train, val and test empty on purpose. Default off.",
    )

    FILTERS = ("name", "signed_out_from", "signed_out_to", "categories", "patients")

    def filter_fields(self) -> list[forms.BoundField]:
        return [self[n] for n in self.FILTERS]

    def param_fields(self) -> list[forms.BoundField]:
        return [self[n] for n in self.fields if n not in self.FILTERS]

    def export_filters(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {
            "signed_out_from": d["signed_out_from"],
            "signed_out_to": d["signed_out_to"],
            "categories": d["categories"],
            "patients": [p.strip() for p in d["patients"].split(",") if p.strip()],
        }

    def export_params(self) -> dict[str, Any]:
        d = self.cleaned_data
        names = ("seed", "tile_size", "tile_overlap", "empty_tile_ratio", "crop_size")
        return {k: d[k] for k in names} | {
            "split": [d["split_train"], d["split_val"], d["split_test"]],
            "include_undecided": d["include_undecided"],
            "train_only": d["train_only"],
        }

    def add_errors(self, exc: Exception) -> None:
        """A service's refusal, on the field it names (the form's top otherwise)."""
        if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
            for key, problems in exc.message_dict.items():
                self.add_error(key if key in self.fields else None, problems)
        else:
            self.add_error(None, _error_text(exc))


@require_http_methods(["GET", "HEAD", "POST"])
def export_list(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if request.method == "POST" and not user_can_write(user):
        raise PermissionDenied("Your role can read exports but not make them.")
    form = ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            export = dataset_export_create(
                name=form.cleaned_data["name"],
                created_by=user,
                filters=form.export_filters(),
                params=form.export_params(),
            )
        except PermissionDeniedError as exc:
            raise PermissionDenied(exc.message) from exc
        except (ApplicationError, ValidationError) as exc:
            form.add_errors(exc)
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
