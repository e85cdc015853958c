"""Thin API views for cells on a slide."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.cases.selectors import slide_get
from papreview.core.api import ERROR_RESPONSES, StrictCharField, paginated_response, request_user
from papreview.core.choices import BETHESDA_CHOICES
from papreview.core.exceptions import error_body
from papreview.core.pagination import PageNumberPagination
from papreview.review.errors import StaleVersionError
from papreview.review.models import Cell, CellRevision, ReviewStatus, SightingVia
from papreview.review.selectors import CELL_ORDERINGS, cell_get, cell_list, cell_revision_list
from papreview.review.services import (
    MAX_CELLS_PER_REQUEST,
    cell_add,
    cell_sightings_record,
    cell_update,
    cells_clear_seen,
)


class CellOutputSerializer(serializers.ModelSerializer[Cell]):
    class Meta:
        model = Cell
        ref_name = "Cell"
        fields = (
            "id",
            "slide",
            "run",
            "x",
            "y",
            "width",
            "height",
            "predicted_class",
            "probabilities",
            "detection_score",
            "focal_plane",
            "current_class",
            "review_status",
            "last_reviewed_by",
            "last_reviewed_at",
            "version",
            "created_at",
            "updated_at",
        )


class StaleCellSerializer(serializers.Serializer):
    detail = StrictCharField()
    code = StrictCharField()
    current = CellOutputSerializer(help_text="The cell as it is now.")

    class Meta:
        ref_name = "StaleCellError"


class SlideCellListApi(APIView):
    """The cells on a slide, or add one the model missed."""

    pagination_class = PageNumberPagination

    class FilterSerializer(serializers.Serializer):
        review_status = serializers.ChoiceField(choices=ReviewStatus.choices, required=False)
        current_class = serializers.ChoiceField(choices=BETHESDA_CHOICES, required=False)
        ordering = serializers.ChoiceField(
            choices=sorted(CELL_ORDERINGS), required=False, default="id"
        )

        class Meta:
            ref_name = "CellFilter"

    class InputSerializer(serializers.Serializer):
        x = serializers.IntegerField(min_value=0)
        y = serializers.IntegerField(min_value=0)
        width = serializers.IntegerField(min_value=1)
        height = serializers.IntegerField(min_value=1)
        current_class = serializers.ChoiceField(choices=BETHESDA_CHOICES)

        class Meta:
            ref_name = "CellAddInput"

    @extend_schema(
        parameters=[FilterSerializer],
        responses={200: CellOutputSerializer(many=True), **ERROR_RESPONSES},
    )
    def get(self, request: Request, slide_id: int) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        slide = slide_get(slide_id=slide_id)
        cells = cell_list(slide_id=slide.pk, **filters.validated_data)
        return paginated_response(
            queryset=cells, serializer_class=CellOutputSerializer, request=request, view=self
        )

    @extend_schema(
        request=InputSerializer, responses={201: CellOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request, slide_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        slide = slide_get(slide_id=slide_id)
        cell = cell_add(slide=slide, by=request_user(request), **serializer.validated_data)
        return Response(CellOutputSerializer(cell).data, status=status.HTTP_201_CREATED)


class CellDetailApi(APIView):
    """Read a cell, or change its class, box or review status (optimistic locking)."""

    class InputSerializer(serializers.Serializer):
        version = serializers.IntegerField(
            min_value=1, help_text="The version you read; a stale one gets 409 with the cell."
        )
        current_class = serializers.ChoiceField(choices=BETHESDA_CHOICES, required=False)
        x = serializers.IntegerField(min_value=0, required=False)
        y = serializers.IntegerField(min_value=0, required=False)
        width = serializers.IntegerField(min_value=1, required=False)
        height = serializers.IntegerField(min_value=1, required=False)
        review_status = serializers.ChoiceField(choices=ReviewStatus.choices, required=False)

        class Meta:
            ref_name = "CellUpdateInput"

    @extend_schema(responses={200: CellOutputSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, cell_id: int) -> Response:
        return Response(CellOutputSerializer(cell_get(cell_id=cell_id)).data)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: CellOutputSerializer,
            **ERROR_RESPONSES,
            409: OpenApiResponse(
                StaleCellSerializer, description="Stale version (with the current cell)."
            ),
        },
    )
    def patch(self, request: Request, cell_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        version = changes.pop("version")
        cell = cell_get(cell_id=cell_id)
        try:
            cell = cell_update(cell=cell, version=version, by=request_user(request), **changes)
        except StaleVersionError as exc:
            body = error_body(exc.message, exc.code, current=CellOutputSerializer(exc.cell).data)
            return Response(body, status=status.HTTP_409_CONFLICT)
        return Response(CellOutputSerializer(cell).data)


class CellRevisionListApi(APIView):
    """Every change of a cell, oldest first."""

    pagination_class = PageNumberPagination

    class OutputSerializer(serializers.ModelSerializer[CellRevision]):
        changed_by = StrictCharField(source="changed_by.username")

        class Meta:
            model = CellRevision
            ref_name = "CellRevision"
            fields = ("id", "version", "changed_by", "changed_at", "before", "after")

    @extend_schema(responses={200: OutputSerializer(many=True), **ERROR_RESPONSES})
    def get(self, request: Request, cell_id: int) -> Response:
        cell = cell_get(cell_id=cell_id)
        return paginated_response(
            queryset=cell_revision_list(cell_id=cell.pk),
            serializer_class=self.OutputSerializer,
            request=request,
            view=self,
        )


def _cell_id_list() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        allow_empty=False,
        min_length=1,  # documents allow_empty=False in the schema
        max_length=MAX_CELLS_PER_REQUEST,
    )


class SlideCellSightingsApi(APIView):
    """Record that the user saw these cells: `via` "selected" (opened in the viewer) or "gallery"
    (its crop shown at review size). Seeing is not deciding; it is what "reviewed, none abnormal"
    may vouch for. Ids that are not (or no longer) cells of the slide are answered in `unknown`."""

    class InputSerializer(serializers.Serializer):
        cells = _cell_id_list()
        via = serializers.ChoiceField(choices=SightingVia.choices)

        class Meta:
            ref_name = "CellSightingsInput"

    class OutputSerializer(serializers.Serializer):
        recorded = serializers.IntegerField()
        unknown = serializers.ListField(child=serializers.IntegerField())

        class Meta:
            ref_name = "CellSightingsOutput"

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer, **ERROR_RESPONSES})
    def post(self, request: Request, slide_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        recorded, unknown = cell_sightings_record(
            slide=slide_get(slide_id=slide_id),
            by=request_user(request),
            cell_ids=serializer.validated_data["cells"],
            via=serializer.validated_data["via"],
        )
        return Response({"recorded": recorded, "unknown": unknown})


class SlideCellsClearApi(APIView):
    """ "Reviewed, none abnormal" for cells the user saw: each undecided one becomes `cleared`
    (class NILM, a revision each, one audit event); decided ones are `skipped`. 409 `not_seen`
    with `unseen_cells` when the user never saw some of them (nothing is changed then)."""

    class InputSerializer(serializers.Serializer):
        cells = _cell_id_list()

        class Meta:
            ref_name = "CellsClearInput"

    class OutputSerializer(serializers.Serializer):
        cleared = CellOutputSerializer(many=True)
        skipped = serializers.ListField(child=serializers.IntegerField())

        class Meta:
            ref_name = "CellsClearOutput"

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer, **ERROR_RESPONSES})
    def post(self, request: Request, slide_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = cells_clear_seen(
            slide=slide_get(slide_id=slide_id),
            by=request_user(request),
            cell_ids=serializer.validated_data["cells"],
        )
        return Response(self.OutputSerializer(result).data)
