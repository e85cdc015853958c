"""Thin API views for patients and slides: parse input, call a service or selector, serialize."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.audit.services import audit_slide_opened
from papreview.cases.models import (
    SLIDE_FILE_FIELDS,
    Interpretation,
    Patient,
    Slide,
    SlideStatus,
)
from papreview.cases.selectors import (
    SLIDE_ORDERINGS,
    patient_get,
    patient_list,
    slide_get,
    slide_list,
)
from papreview.cases.services import patient_create, slide_create
from papreview.core.api import ERROR_RESPONSES, paginated_response, request_user
from papreview.core.pagination import PageNumberPagination
from papreview.core.parsers import StrictMultiPartParser


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
    signed_out_by = serializers.CharField(source="signed_out_by.username", read_only=True)

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
    patient_identifier = serializers.CharField(source="patient.identifier", read_only=True)
    progress = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Percent done of the latest analysis run."
    )
    latest_run = serializers.IntegerField(source="latest_run_id", read_only=True, allow_null=True)
    run_status = serializers.CharField(
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
        search = serializers.CharField(required=False, allow_blank=True)

        class Meta:
            ref_name = "PatientFilter"

    class InputSerializer(serializers.Serializer):
        identifier = serializers.CharField(max_length=64)
        birth_year = serializers.IntegerField(
            required=False, allow_null=True, min_value=1900, max_value=2100
        )
        notes = serializers.CharField(required=False, allow_blank=True, default="")

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
        return Response(PatientOutputSerializer(patient_get(patient_id=patient_id)).data)


class SlideListApi(APIView):
    """List slides (the review queue with `ordering=-triage_score`) or upload a new one."""

    parser_classes = [StrictMultiPartParser, FormParser]  # refuses hostile file names
    pagination_class = PageNumberPagination

    class FilterSerializer(serializers.Serializer):
        status = serializers.CharField(
            required=False,
            help_text=f"Comma-separated statuses: {', '.join(SlideStatus.values)}.",
        )
        patient = serializers.IntegerField(required=False, min_value=1)
        ordering = serializers.ChoiceField(
            choices=sorted(SLIDE_ORDERINGS), required=False, default="-created_at"
        )

        class Meta:
            ref_name = "SlideFilter"

        def validate_status(self, value: str) -> list[str]:
            statuses = [s.strip() for s in value.split(",") if s.strip()]
            unknown = [s for s in statuses if s not in SlideStatus.values]
            if unknown:
                raise serializers.ValidationError(
                    f"Unknown status {', '.join(unknown)}; use {', '.join(SlideStatus.values)}."
                )
            return statuses

    class InputSerializer(serializers.Serializer):
        patient = serializers.PrimaryKeyRelatedField(
            queryset=Patient.objects.all(),
            error_messages={
                "does_not_exist": "No patient with id {pk_value}. Create the patient first.",
                "incorrect_type": "Give the patient's numeric id.",
            },
        )
        file = serializers.FileField(
            allow_empty_file=False,
            error_messages={
                "required": (
                    "No file was uploaded. Attach the slide image as 'file'. (A file whose name "
                    "is not valid UTF-8 is not received: rename it.)"
                ),
                "empty": "The uploaded file is empty.",
            },
        )

        class Meta:
            ref_name = "SlideUploadInput"

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, description="Comma-separated statuses."),
            OpenApiParameter("patient", OpenApiTypes.INT),
            OpenApiParameter("ordering", OpenApiTypes.STR, enum=sorted(SLIDE_ORDERINGS)),
        ],
        responses={200: SlideOutputSerializer(many=True), **ERROR_RESPONSES},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        slides = slide_list(
            statuses=data.get("status", []),
            patient_id=data.get("patient"),
            ordering=data["ordering"],
        )
        return paginated_response(
            queryset=slides, serializer_class=SlideOutputSerializer, request=request, view=self
        )

    @extend_schema(
        request={"multipart/form-data": InputSerializer},
        responses={201: SlideOutputSerializer, **ERROR_RESPONSES},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        slide = slide_create(
            patient=serializer.validated_data["patient"],
            file=serializer.validated_data["file"],
            uploaded_by=request_user(request),
        )
        slide = slide_get(slide_id=slide.pk)
        return Response(SlideOutputSerializer(slide).data, status=status.HTTP_201_CREATED)


class SlideDetailApi(APIView):
    @extend_schema(responses={200: SlideOutputSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, slide_id: int) -> Response:
        slide = slide_get(slide_id=slide_id)
        audit_slide_opened(slide=slide, user=request.user, via="api")
        return Response(SlideOutputSerializer(slide).data)
