"""Thin API views: dataset exports (create, progress, download) and the model dashboard's figures.
Model versions (list, activate, roll back) and evaluations are in `registry_apis`."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.core.api import ERROR_RESPONSES, StrictCharField, not_blank_text, request_user
from papreview.core.exceptions import ConflictError, NotFoundError
from papreview.datasets.dashboard import model_dashboard
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.datasets.params import ExportFiltersSerializer, ExportParamsSerializer, export_errors
from papreview.datasets.selectors import dataset_export_get, dataset_export_list
from papreview.datasets.services import dataset_export_create


class DatasetExportOutputSerializer(serializers.ModelSerializer[DatasetExport]):
    created_by = StrictCharField(
        source="created_by.username", read_only=True, allow_null=True, default=None
    )
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = DatasetExport
        ref_name = "DatasetExport"
        fields = (
            "id",
            "name",
            "version",
            "status",
            "progress",
            "slides_done",
            "slide_count",
            "cell_count",
            "formats",
            "filters",
            "params",
            "sha256",
            "size_bytes",
            "error",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "download_url",
        )

    def get_download_url(self, obj: DatasetExport) -> str | None:
        if obj.status != ExportStatus.READY:
            return None
        return f"/api/exports/{obj.pk}/download/"


class DatasetExportListApi(APIView):
    """Exports, newest first (GET); a new export version built in the background (POST, 202).

    Only signed-out slides are exported. `filters`: signed_out_from / signed_out_to (dates),
    categories (slide Bethesda categories), patients (identifiers), slide_ids, reviewed_by.
    `params`: tile_size, tile_overlap, empty_tile_ratio, crop_size, split ([train, val, test]),
    seed, include_undecided, train_only. The split is by patient: a filter matching fewer than 3
    patients is refused (400, `too_few_patients`) unless `train_only` is true (val and test
    empty on purpose). Errors name the field itself ("crop_size", not "params.crop_size").
    """

    class InputSerializer(serializers.Serializer):
        name = not_blank_text("name", max_length=100)
        filters = ExportFiltersSerializer(required=False)
        params = ExportParamsSerializer(required=False)

        class Meta:
            ref_name = "DatasetExportInput"

    @extend_schema(responses={200: DatasetExportOutputSerializer(many=True), **ERROR_RESPONSES})
    def get(self, request: Request) -> Response:
        exports = dataset_export_list()[:200]
        return Response(DatasetExportOutputSerializer(exports, many=True).data)

    @extend_schema(
        request=InputSerializer,
        responses={202: DatasetExportOutputSerializer, **ERROR_RESPONSES},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        if not data.is_valid():
            raise serializers.ValidationError(export_errors(data.errors))
        export = dataset_export_create(created_by=request_user(request), **data.validated_data)
        return Response(DatasetExportOutputSerializer(export).data, status=status.HTTP_202_ACCEPTED)


class DatasetExportDetailApi(APIView):
    """One export: status and progress while it is built, manifest summary when ready."""

    @extend_schema(responses={200: DatasetExportOutputSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, export_id: int) -> Response:
        return Response(DatasetExportOutputSerializer(dataset_export_get(export_id=export_id)).data)


def export_file_response(export: DatasetExport) -> FileResponse:
    """The export's zip, streamed (409 until it is ready)."""
    if export.status != ExportStatus.READY:
        raise ConflictError(f"Export {export} is {export.status}; download it once it is ready.")
    name = str(export.file.name or "")
    if not name or not default_storage.exists(name):
        raise NotFoundError(f"The file of export {export} is missing from storage.")
    filename = f"{export.name}-v{export.version}.zip".replace(" ", "_")
    response = FileResponse(
        default_storage.open(name, "rb"),
        as_attachment=True,
        filename=filename,
        content_type="application/zip",
    )
    response["X-Checksum-SHA256"] = export.sha256
    # Who downloaded it (the user of the request being served) is in the audit trail.
    audit_record(
        action=AuditAction.EXPORT_DOWNLOADED, target=export, data={"sha256": export.sha256}
    )
    return response


class DatasetExportDownloadApi(APIView):
    """The export's zip (application/zip); header X-Checksum-SHA256 carries its digest."""

    @extend_schema(responses={(200, "application/zip"): bytes, **ERROR_RESPONSES})
    def get(self, request: Request, export_id: int) -> FileResponse:
        return export_file_response(dataset_export_get(export_id=export_id))


class ModelDashboardApi(APIView):
    """The model dashboard's figures: per model version (of each stage) and class, how many
    cells reviewers confirmed, left unchanged, relabelled, rejected or had to add; Cohen's kappa
    (overall and one-vs-rest) reviewer vs reviewer (QC re-reviews), reviewer vs model and QC
    reviewer vs model (kappa null where undefined)."""

    @extend_schema(responses={200: dict, **ERROR_RESPONSES})
    def get(self, request: Request) -> Response:
        return Response(model_dashboard())
