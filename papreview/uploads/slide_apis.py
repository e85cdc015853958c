"""The slide list and the one-request upload (`POST /api/slides/`, multipart): an upload stores
the slide and queues its analysis (`papreview.uploads.services.slide_upload`)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.audit.services import audit_read
from papreview.cases.apis import SlideOutputSerializer
from papreview.cases.filters import ALL, OPEN, SlideFilter
from papreview.cases.models import Patient, SlideStatus
from papreview.cases.selectors import SLIDE_ORDERINGS, slide_get, slide_list
from papreview.core.api import ERROR_RESPONSES, paginated_response, request_user
from papreview.core.choices import BETHESDA_CHOICES
from papreview.core.pagination import PageNumberPagination
from papreview.core.parsers import StrictMultiPartParser
from papreview.uploads.services import slide_upload, upload_size_check

_ONE_STATUS = "|".join(SlideStatus.values)
STATUS_PATTERN = rf"^({OPEN}|{ALL}|({_ONE_STATUS})(,({_ONE_STATUS}))*)$"
BETHESDA_VALUES = [value for value, _ in BETHESDA_CHOICES]


class SlideListApi(APIView):
    """List slides (the review queue with `ordering=-triage_score`) or upload a new one."""

    parser_classes = [StrictMultiPartParser, FormParser]  # refuses hostile file names
    pagination_class = PageNumberPagination

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
            OpenApiParameter(
                "status",
                {"type": "string", "pattern": STATUS_PATTERN},
                description="open, all, or comma-separated statuses.",
            ),
            OpenApiParameter("patient", {"type": "integer", "minimum": 1}),
            OpenApiParameter("q", OpenApiTypes.STR, description="Part of the patient identifier."),
            OpenApiParameter("triage_class", OpenApiTypes.STR, enum=list(BETHESDA_VALUES)),
            OpenApiParameter("mine", OpenApiTypes.BOOL, description="Assigned to me."),
            OpenApiParameter("date_from", OpenApiTypes.DATE),
            OpenApiParameter("date_to", OpenApiTypes.DATE),
            OpenApiParameter("ordering", OpenApiTypes.STR, enum=sorted(SLIDE_ORDERINGS)),
        ],
        responses={200: SlideOutputSerializer(many=True), **ERROR_RESPONSES},
    )
    def get(self, request: Request) -> Response:
        data = request.query_params.copy()
        data.setdefault("ordering", "-created_at")
        filters = SlideFilter(data, queryset=slide_list(), request=request)
        if not filters.is_valid():
            raise ValidationError(filters.errors)
        slides = filters.qs
        audit_read(request=request, what="slide_list")
        return paginated_response(
            queryset=slides, serializer_class=SlideOutputSerializer, request=request, view=self
        )

    @extend_schema(
        request={"multipart/form-data": InputSerializer},
        responses={201: SlideOutputSerializer, **ERROR_RESPONSES},
    )
    def post(self, request: Request) -> Response:
        # refuse a body over the upload limit before reading it (the multipart parser would
        # spool all of it to disk first)
        length = request.META.get("CONTENT_LENGTH") or "0"
        upload_size_check("the upload", int(length) if length.isdigit() else 0)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        slide = slide_upload(
            patient=serializer.validated_data["patient"],
            file=serializer.validated_data["file"],
            uploaded_by=request_user(request),
        )
        slide = slide_get(slide_id=slide.pk)
        return Response(SlideOutputSerializer(slide).data, status=status.HTTP_201_CREATED)
