"""Thin API views for analyses: re-run a slide's analysis, list its runs (with progress), and
what the latest run set aside as not cells."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.analysis.models import SET_ASIDE_BOXES_MAX, AnalysisRun
from papreview.analysis.selectors import analysis_run_list, analysis_run_set_aside_boxes
from papreview.analysis.services import analysis_request
from papreview.audit.services import audit_read
from papreview.cases.apis import SlideOutputSerializer
from papreview.cases.selectors import slide_get
from papreview.core.api import ERROR_RESPONSES, request_user


class AnalysisRunOutputSerializer(serializers.ModelSerializer[AnalysisRun]):
    detector_version = serializers.CharField(
        source="detector_version.name", read_only=True, allow_null=True, default=None
    )
    classifier_version = serializers.CharField(
        source="classifier_version.name", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = AnalysisRun
        ref_name = "AnalysisRun"
        fields = (
            "id",
            "slide",
            "status",
            "progress",
            "tiles_done",
            "tiles_total",
            "attempts",
            "error",
            "device",
            "detector_version",
            "classifier_version",
            "model_versions",
            "timings",
            "created_at",
            "published_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
        )


class SlideAnalyzeApi(APIView):
    """Queue a new analysis of the slide (re-run). Reviewed cells and their revisions are kept;
    the slide's unreviewed predictions are replaced when the run succeeds. Viewers: 403."""

    @extend_schema(request=None, responses={202: SlideOutputSerializer, **ERROR_RESPONSES})
    def post(self, request: Request, slide_id: int) -> Response:
        analysis_request(slide=slide_get(slide_id=slide_id), requested_by=request_user(request))
        return Response(
            SlideOutputSerializer(slide_get(slide_id=slide_id)).data,
            status=status.HTTP_202_ACCEPTED,
        )


class SlideRunListApi(APIView):
    """The slide's analysis runs, newest first: status, progress (tiles), error, versions."""

    @extend_schema(responses={200: AnalysisRunOutputSerializer(many=True), **ERROR_RESPONSES})
    def get(self, request: Request, slide_id: int) -> Response:
        slide_get(slide_id=slide_id)  # 404 for an unknown slide
        runs = analysis_run_list(slide_id=slide_id)
        return Response(AnalysisRunOutputSerializer(runs, many=True).data)


class SetAsideOutputSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="How many candidates the run set aside.")
    boxes = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=4, max_length=4),
        help_text=f"Level-0 boxes [x, y, width, height] (the first {SET_ASIDE_BOXES_MAX:,}).",
    )


class SlideSetAsideApi(APIView):
    """What the slide's latest finished analysis set aside as not cells (leukocytes, debris,
    nothing a reviewer needs): never cells, never counted, kept so a reviewer can look."""

    @extend_schema(responses={200: SetAsideOutputSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, slide_id: int) -> Response:
        slide = slide_get(slide_id=slide_id)  # 404 for an unknown slide
        audit_read(request=request, what="set-aside", target=slide)
        found = analysis_run_set_aside_boxes(slide_id=slide.pk)
        return Response(SetAsideOutputSerializer({"count": found.count, "boxes": found.boxes}).data)
