"""Thin API views for patients and slides: parse input, call a service or selector, serialize."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.audit.services import audit_read
from papreview.cases.models import (
    SLIDE_FILE_FIELDS,
    Interpretation,
    Patient,
    Slide,
)
from papreview.cases.selectors import (
    patient_get,
    patient_list,
    slide_get,
)
from papreview.cases.services import patient_create
from papreview.core.api import (
    ERROR_RESPONSES,
    StrictCharField,
    not_blank_text,
    paginated_response,
    request_user,
)
from papreview.core.pagination import PageNumberPagination


class PatientOutputSerializer(serializers.ModelSerializer[Patient]):
    slide_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Patient
        ref_name = "Patient"
        fields = (
            "id",
            "identifier",
            "birth_year",
            "notes",
            "slide_count",
            "created_at",
            "updated_at",
        )


class InterpretationOutputSerializer(serializers.ModelSerializer[Interpretation]):
    signed_out_by = StrictCharField(source="signed_out_by.username", read_only=True)

    class Meta:
        model = Interpretation
        ref_name = "Interpretation"
        fields = (
            "bethesda_category",
            "specimen_adequacy",
            "specimen_type",
            "report",
            "comment",
            "signed_out_by",
            "signed_out_at",
        )


class SlideOutputSerializer(serializers.ModelSerializer[Slide]):
    patient_identifier = StrictCharField(source="patient.identifier", read_only=True)
    progress = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Percent done of the latest analysis run."
    )
    latest_run = serializers.IntegerField(source="latest_run_id", read_only=True, allow_null=True)
    run_status = StrictCharField(
        source="latest_run_status",
        read_only=True,
        allow_null=True,
        help_text="Status of the latest analysis run: queued, running, succeeded, failed.",
    )
    tiles_done = serializers.IntegerField(
        source="latest_run_tiles_done",
        read_only=True,
        allow_null=True,
        help_text="Detector tiles the latest analysis run has processed.",
    )
    tiles_total = serializers.IntegerField(
        source="latest_run_tiles_total",
        read_only=True,
        allow_null=True,
        help_text="Detector tiles in the slide (0 until the run has planned its tiles).",
    )
    interpretation = serializers.SerializerMethodField()

    class Meta:
        model = Slide
        ref_name = "Slide"
        fields = (
            "id",
            "patient",
            "patient_identifier",
            *SLIDE_FILE_FIELDS,
            "status",
            "failure_reason",
            "progress",
            "latest_run",
            "run_status",
            "tiles_done",
            "tiles_total",
            "triage_score",
            "triage_class",
            "assigned_reviewer",
            "uploaded_by",
            "interpretation",
            "created_at",
            "updated_at",
        )

    @extend_schema(responses={200: InterpretationOutputSerializer(allow_null=True)})
    def get_interpretation(self, slide: Slide) -> dict[str, Any] | None:
        interpretation = getattr(slide, "interpretation", None)
        if interpretation is None:
            return None
        return dict(InterpretationOutputSerializer(interpretation).data)


def slide_action_response(
    request: Request,
    *,
    slide_id: int,
    input_serializer: type[serializers.Serializer],
    action: Callable[..., object],
) -> Response:
    """The POST of a slide action (sign out, reopen, assign): validate the input, call
    `action(slide=..., by=<the user>, **input)`, answer the slide as it is now."""
    serializer = input_serializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    action(
        slide=slide_get(slide_id=slide_id), by=request_user(request), **serializer.validated_data
    )
    return Response(SlideOutputSerializer(slide_get(slide_id=slide_id)).data)


class PatientListApi(APIView):
    pagination_class = PageNumberPagination

    class FilterSerializer(serializers.Serializer):
        search = StrictCharField(required=False, allow_blank=True)

        class Meta:
            ref_name = "PatientFilter"

    class InputSerializer(serializers.Serializer):
        identifier = not_blank_text("identifier", max_length=64)
        birth_year = serializers.IntegerField(
            required=False, allow_null=True, min_value=1900, max_value=2100
        )
        notes = StrictCharField(required=False, allow_blank=True, default="")

        class Meta:
            ref_name = "PatientCreateInput"

    @extend_schema(
        parameters=[FilterSerializer],
        responses={200: PatientOutputSerializer(many=True), **ERROR_RESPONSES},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        patients = patient_list(**filters.validated_data)
        audit_read(request=request, what="patient_list")
        return paginated_response(
            queryset=patients, serializer_class=PatientOutputSerializer, request=request, view=self
        )

    @extend_schema(
        request=InputSerializer, responses={201: PatientOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        patient = patient_create(**serializer.validated_data, created_by=request_user(request))
        patient = patient_get(patient_id=patient.pk)
        return Response(PatientOutputSerializer(patient).data, status=status.HTTP_201_CREATED)


class PatientDetailApi(APIView):
    @extend_schema(responses={200: PatientOutputSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, patient_id: int) -> Response:
        patient = patient_get(patient_id=patient_id)
        audit_read(request=request, what="patient", target=patient)
        return Response(PatientOutputSerializer(patient).data)


class SlideDetailApi(APIView):
    @extend_schema(responses={200: SlideOutputSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, slide_id: int) -> Response:
        slide = slide_get(slide_id=slide_id)
        audit_read(request=request, what="slide", target=slide)  # not the pages' polling
        return Response(SlideOutputSerializer(slide).data)
