from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from papreview.analysis.models import AnalysisRun, ModelVersion
from papreview.analysis.services import analysis_request, analysis_sweep
from papreview.cases.models import SLIDE_FILE_FIELDS, Interpretation, Slide
from papreview.core.exceptions import ApplicationError


def _queue(request: HttpRequest, slides: list[Slide]) -> None:
    queued, refused = 0, []
    user: Any = request.user
    for slide in slides:
        try:
            analysis_request(slide=slide, requested_by=user)
            queued += 1
        except ApplicationError as exc:
            refused.append(f"slide {slide.pk}: {exc.message}")
    if queued:
        messages.success(request, f"{queued} slide(s) queued for analysis.")
    for line in refused:
        messages.warning(request, line)


@admin.action(description="Analyse the selected slides again")
def slides_analyse_again(
    modeladmin: admin.ModelAdmin[Slide], request: HttpRequest, queryset: QuerySet[Slide]
) -> None:
    _queue(request, list(queryset.order_by("pk")))


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin[ModelVersion]):
    list_display = ("name", "stage", "is_active", "activated_at", "created_at")
    list_filter = ("stage", "is_active")
    search_fields = ("name", "sha256")
    readonly_fields = ("sha256", "activated_at", "previous", "created_at", "updated_at")
    # Activation and rollback (gated by the evaluations) are added by the datasets app's admin,
    # which re-registers this class: the evaluations live above this app.


@admin.register(AnalysisRun)
class AnalysisRunAdmin(admin.ModelAdmin[AnalysisRun]):
    list_display = (
        "id",
        "slide",
        "status",
        "progress",
        "tiles_done",
        "tiles_total",
        "attempts",
        "device",
        "published_at",
        "heartbeat_at",
        "created_at",
    )
    list_filter = ("status", "device")
    search_fields = ("slide__original_filename", "worker", "task_id", "error")
    raw_id_fields = ("slide",)
    # the set-aside boxes (up to 20,000 per run) are for the review page, not for this form
    exclude = ("set_aside_boxes",)
    readonly_fields = [f.name for f in AnalysisRun._meta.fields if f.name != "set_aside_boxes"]
    actions = ["analyse_again", "sweep_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AnalysisRun]:
        return super().get_queryset(request).defer("set_aside_boxes")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Runs come from analysis_request (upload, re-run); an empty add form failed with a 500.
        return False

    @admin.action(description="Analyse these runs' slides again")
    def analyse_again(self, request: HttpRequest, queryset: QuerySet[AnalysisRun]) -> None:
        slide_ids = sorted(set(queryset.values_list("slide_id", flat=True)))
        _queue(request, list(Slide.objects.filter(pk__in=slide_ids).order_by("pk")))

    @admin.action(description="Sweep now: send unpublished jobs, re-send or fail stuck runs")
    def sweep_now(self, request: HttpRequest, queryset: QuerySet[AnalysisRun]) -> None:
        report = analysis_sweep()
        messages.info(
            request,
            f"Sent {len(report.published)} unpublished job(s), re-sent {len(report.resent)} "
            f"stuck run(s), failed {len(report.failed)}, {len(report.busy)} still running.",
        )


class InterpretationInline(admin.StackedInline[Interpretation, Slide]):
    model = Interpretation
    extra = 0
    readonly_fields = ("signed_out_by", "signed_out_at")


@admin.register(Slide)
class SlideAdmin(admin.ModelAdmin[Slide]):
    list_display = (
        "id",
        "original_filename",
        "patient",
        "status",
        "triage_class",
        "triage_score",
        "kind",
        "created_at",
    )
    list_filter = ("status", "kind", "format")
    search_fields = ("original_filename", "patient__identifier", "sha256")
    actions = [slides_analyse_again]
    list_select_related = ("patient",)
    raw_id_fields = ("patient",)
    # Files and their checks come from the upload service; the admin edits the workflow fields.
    readonly_fields = (
        "file",
        *SLIDE_FILE_FIELDS,
        "status",
        "failure_reason",
        "status_changed_at",
        "uploaded_by",
        "created_at",
        "updated_at",
    )
    inlines = [InterpretationInline]

    def has_add_permission(self, request: object) -> bool:
        return False  # uploads go through the API or the upload page (they are checked there)
