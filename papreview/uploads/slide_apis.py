"""The slide list and the one-request upload (`POST /api/slides/`, multipart): an upload stores
the slide and queues its analysis (`papreview.uploads.services.slide_upload`)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.cases.apis import SlideOutputSerializer
from papreview.cases.models import Patient, SlideStatus
from papreview.cases.selectors import SLIDE_ORDERINGS, slide_get, slide_list
from papreview.core.api import ERROR_RESPONSES, paginated_response, request_user
from papreview.core.pagination import PageNumberPagination
from papreview.core.parsers import StrictMultiPartParser
from papreview.uploads.services import slide_upload


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
        slide = slide_upload(
            patient=serializer.validated_data["patient"],
            file=serializer.validated_data["file"],
            uploaded_by=request_user(request),
        )
        slide = slide_get(slide_id=slide.pk)
        return Response(SlideOutputSerializer(slide).data, status=status.HTTP_201_CREATED)
