"""Resumable chunked uploads (a small subset of the tus protocol's ideas, plain HTTP):

- `POST /api/uploads/` `{"patient": id, "filename": ..., "size": bytes}` -> 201 with the upload's
  `id` and `offset` 0 (also in the `Upload-Offset` header);
- `PATCH /api/uploads/{id}/` with header `Upload-Offset: <bytes already sent>` and the chunk as
  the raw body (`Content-Type: application/offset+octet-stream`) -> 200 with the new offset; the
  last chunk creates the slide (`status` complete and `slide`) or answers the refusal (4xx with
  `detail`, `code` and the upload); a chunk at the wrong offset -> 409 with the right `offset`;
- `GET`/`HEAD /api/uploads/{id}/` -> the current offset, to resume after a dropped connection;
- `DELETE /api/uploads/{id}/` -> cancel.
"""

from __future__ import annotations

import uuid

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.cases.models import Patient
from papreview.core.api import ERROR_RESPONSES, StrictCharField, request_user
from papreview.core.exceptions import error_body
from papreview.uploads.models import Upload, UploadStatus
from papreview.uploads.selectors import upload_get
from papreview.uploads.services import upload_append, upload_cancel, upload_create


class UploadOutputSerializer(serializers.ModelSerializer[Upload]):
    slide_url = serializers.SerializerMethodField(help_text="The slide's review page when done.")

    class Meta:
        model = Upload
        ref_name = "Upload"
        fields = (
            "id",
            "patient",
            "filename",
            "size",
            "offset",
            "status",
            "error",
            "error_code",
            "slide",
            "slide_url",
            "created_at",
            "updated_at",
        )

    def get_slide_url(self, upload: Upload) -> str | None:
        if upload.slide_id is None:
            return None
        return reverse("slide-review", args=[upload.slide_id])


def _upload_response(
    upload: Upload, code: int = status.HTTP_200_OK, *, refusal_as_error: bool = True
) -> Response:
    """The upload, with its offset in headers; a refused upload answers its refusal (4xx)."""
    data = UploadOutputSerializer(upload).data
    if upload.status == UploadStatus.FAILED and refusal_as_error:
        code = upload.error_status or status.HTTP_400_BAD_REQUEST
        body = error_body(upload.error, upload.error_code or "invalid", upload=data)
        response = Response(body, status=code)
    else:
        response = Response(data, status=code)
    response["Upload-Offset"] = str(upload.offset)
    response["Upload-Length"] = str(upload.size)
    response["Cache-Control"] = "no-store"
    return response


class UploadListApi(APIView):
    class InputSerializer(serializers.Serializer):
        patient = serializers.PrimaryKeyRelatedField(
            queryset=Patient.objects.all(),
            error_messages={
                "does_not_exist": "No patient with id {pk_value}. Create the patient first.",
                "incorrect_type": "Give the patient's numeric id.",
            },
        )
        filename = StrictCharField(max_length=255)
        size = serializers.IntegerField(min_value=1, help_text="The whole file's size in bytes.")

        class Meta:
            ref_name = "UploadCreateInput"

    @extend_schema(
        request=InputSerializer, responses={201: UploadOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = upload_create(**serializer.validated_data, by=request_user(request))
        response = _upload_response(upload, status.HTTP_201_CREATED)
        response["Location"] = reverse("upload-detail", args=[upload.pk])
        return response


class UploadDetailApi(APIView):
    @extend_schema(responses={200: UploadOutputSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, upload_id: uuid.UUID) -> Response:
        upload = upload_get(upload_id=upload_id, by=request_user(request))
        return _upload_response(upload, refusal_as_error=False)  # reading it is not an error

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "Upload-Offset",
                OpenApiTypes.INT,
                OpenApiParameter.HEADER,
                required=True,
                description="Where this chunk starts in the file (bytes the server has).",
            )
        ],
        request={"application/offset+octet-stream": OpenApiTypes.BINARY},
        responses={
            200: UploadOutputSerializer,
            **ERROR_RESPONSES,
            413: OpenApiResponse(description="Chunk or file too large."),
        },
    )
    def patch(self, request: Request, upload_id: uuid.UUID) -> Response:
        user = request_user(request)
        upload = upload_get(upload_id=upload_id, by=user)
        try:
            offset = int(request.headers.get("Upload-Offset", ""))
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError as exc:
            raise ValidationError(
                {"Upload-Offset": "Send the chunk's start as the Upload-Offset header."}
            ) from exc
        # Read the raw body as a stream (never request.body or request.data: no whole chunk in
        # memory, and no size cap meant for form posts).
        upload = upload_append(
            upload=upload, offset=offset, length=length, stream=request._request, by=user
        )
        return _upload_response(upload)

    @extend_schema(responses={204: None, **ERROR_RESPONSES})
    def delete(self, request: Request, upload_id: uuid.UUID) -> Response:
        user = request_user(request)
        upload_cancel(upload=upload_get(upload_id=upload_id, by=user), by=user)
        return Response(status=status.HTTP_204_NO_CONTENT)
