"""Admin of the model registry: checkpoint registration (an action on the exports admin, which
this app re-registers), model evaluations, and gated activation and rollback of model versions
(re-registering the analysis app's ModelVersion admin with those actions)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import URLPattern, path, reverse

from inference.errors import InputError
from papreview.analysis.admin import ModelVersionAdmin as BaseModelVersionAdmin
from papreview.analysis.models import ModelStage, ModelVersion
from papreview.core.exceptions import ApplicationError
from papreview.datasets.admin import DatasetExportAdmin as BaseDatasetExportAdmin
from papreview.datasets.models import DatasetExport
from papreview.registry.activation import model_version_activate_by, model_version_rollback_by
from papreview.registry.models import ModelEvaluation
from papreview.registry.services import model_version_register_checkpoint


class RegisterCheckpointForm(forms.Form):
    checkpoint = forms.FileField(
        help_text="detector.pt or classifier.pt from `python -m inference`."
    )
    stage = forms.ChoiceField(choices=ModelStage.choices)
    training_export = forms.ModelChoiceField(
        queryset=DatasetExport.objects.order_by("-created_at"),
        required=False,
        help_text="Default: the export the checkpoint names in its metadata.",
    )
    activate = forms.BooleanField(required=False, help_text="Also make it the active version.")


admin.site.unregister(DatasetExport)


@admin.register(DatasetExport)
class DatasetExportAdmin(BaseDatasetExportAdmin):
    actions = ["register_checkpoint", "build_again"]

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.register_checkpoint_view)
        return [
            path("register-checkpoint/", view, name="datasets_register_checkpoint"),
            *super().get_urls(),
        ]

    @admin.action(description="Register a checkpoint trained on the selected export")
    def register_checkpoint(
        self, request: HttpRequest, queryset: QuerySet[DatasetExport]
    ) -> HttpResponseRedirect:
        url = reverse("admin:datasets_register_checkpoint")
        first = queryset.order_by("-created_at").first()
        return HttpResponseRedirect(f"{url}?export={first.pk}" if first else url)

    def register_checkpoint_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a checkpoint and record it as a ModelVersion (sha256, metrics, export)."""
        initial: dict[str, Any] = {}
        if request.GET.get("export", "").isdigit():
            initial["training_export"] = int(request.GET["export"])
        form = RegisterCheckpointForm(request.POST or None, request.FILES or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["checkpoint"]
            with tempfile.TemporaryDirectory(prefix="papreview-ckpt-") as tmp:
                local = Path(tmp) / "checkpoint.pt"
                with local.open("wb") as fh:
                    for chunk in upload.chunks():
                        fh.write(chunk)
                try:
                    user: Any = request.user
                    mv = model_version_register_checkpoint(
                        stage=form.cleaned_data["stage"],
                        path=local,
                        created_by=user,
                        training_export=form.cleaned_data["training_export"],
                        activate=form.cleaned_data["activate"],
                    )
                except InputError as exc:
                    form.add_error("checkpoint", str(exc))
                else:
                    messages.success(request, f"Registered {mv} ({mv.sha256[:12]}).")
                    return HttpResponseRedirect(
                        reverse("admin:analysis_modelversion_change", args=[mv.pk])
                    )
        context = {
            **self.admin_site.each_context(request),
            "title": "Register a model checkpoint",
            "form": form,
            "opts": self.model._meta,
        }
        return render(request, "registry/admin_register_checkpoint.html", context)


@admin.register(ModelEvaluation)
class ModelEvaluationAdmin(admin.ModelAdmin[ModelEvaluation]):
    list_display = ("model_version", "export", "split", "status", "updated_at")
    list_filter = ("status", "split")
    readonly_fields = ("metrics", "error", "created_at", "updated_at")


admin.site.unregister(ModelVersion)


@admin.register(ModelVersion)
class ModelVersionAdmin(BaseModelVersionAdmin):
    """Activation through the same gate as the Models page; without a place for a reason here,
    a version that is worse or not comparable is refused with the gate's message (give the
    reason on the Models page or in the API)."""

    actions = ["activate", "roll_back"]

    @admin.action(description="Activate the selected version (one per stage)")
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        chosen = list(queryset)
        if len({mv.stage for mv in chosen}) != len(chosen):
            messages.error(request, "Choose at most one version per stage.")
            return
        done = []
        for mv in chosen:
            try:
                done.append(model_version_activate_by(model_version=mv, by=_admin(request)))
            except ApplicationError as exc:
                messages.error(request, f"{exc.message} (Models page: /models/)")
        if done:
            names = ", ".join(mv.name for mv in done)
            messages.success(request, f"Active now: {names} (used by the next jobs).")

    @admin.action(description="Roll the selected versions' stages back to the previous version")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for stage in sorted({mv.stage for mv in queryset}):
            try:
                mv = model_version_rollback_by(stage=stage, by=_admin(request))
            except ApplicationError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"{mv.name} is the active {stage} again.")


def _admin(request: HttpRequest) -> Any:
    return request.user  # the admin site lets only staff in; the services check the role
