"""Thin API views for the review workflow: the viewer's cell layer, the interpretation draft,
assigning, referring, signing out and reopening a slide."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import User
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.accounts.roles import Role
from papreview.audit.services import audit_read
from papreview.cases.apis import (
    InterpretationOutputSerializer,
    SlideOutputSerializer,
    slide_action_response,
)
from papreview.cases.models import Interpretation, Slide, SpecimenAdequacy, SpecimenType
from papreview.cases.selectors import slide_get
from papreview.core.api import ERROR_RESPONSES, StrictCharField, request_user
from papreview.core.choices import BETHESDA_CHOICES
from papreview.workflow.models import InterpretationDraft, SlideEvent
from papreview.workflow.selectors import (
    CELL_LAYER_CLASSES,
    CELL_LAYER_FIELDS,
    CELL_LAYER_STATUSES,
    CONFIDENCE_SCALE,
    interpretation_suggestion,
    reviewer_list,
    slide_cell_columns,
    slide_cell_layer,
    slide_event_list,
)
from papreview.workflow.services import (
    MAX_REASON,
    interpretation_draft_save,
    slide_assign,
    slide_refer,
    slide_reopen,
    slide_sign_out,
)


class CellLayerOutputSerializer(serializers.Serializer):
    rows = serializers.ListField(
        child=serializers.ListField(), required=False, help_text="One row per cell."
    )
    columns = serializers.DictField(
        child=serializers.ListField(),
        required=False,
        help_text="With ?layout=columns: one array per field, instead of rows.",
    )
    codes = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField(allow_blank=True)),
        required=False,
        help_text="With ?layout=columns: the tables that the class and status columns index.",
    )
    confidence_scale = serializers.IntegerField(
        required=False, help_text="With ?layout=columns: confidence = column value / this."
    )

    class Meta:
        ref_name = "CellLayer"

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # "fields" cannot be a class attribute: it would hide Serializer.fields.
        fields = super().get_fields()
        fields["fields"] = serializers.ListField(
            child=StrictCharField(), help_text="Names of the row items."
        )
        fields["as_of"] = serializers.DateTimeField(help_text="Server time of the answer.")
        return fields


class SlideCellLayerApi(APIView):
    """Every cell of a slide in one compact answer for the viewer's overlay.

    `{"fields": [...], "rows": [[id, x, y, width, height, current_class, predicted_class,
    review_status, confidence, version], ...], "as_of": <server time>}`; `GET /api/cells/{id}/`
    has the full cell. `?since=<time>` answers only the cells changed after it (the page asks
    every few seconds, with a few seconds of overlap, to show other reviewers' changes).

    `?layout=columns` (what the review page loads): `"columns": {"id": [...], "x": [...], ...}`
    instead of rows, the classes and review statuses as indices into `"codes"`, the confidence
    as an integer in 1/`confidence_scale`: smaller, quicker to parse, served from a per-process
    cache while the slide's cells are unchanged.
    """

    class FilterSerializer(serializers.Serializer):
        since = serializers.DateTimeField(required=False)
        layout = serializers.ChoiceField(choices=["rows", "columns"], default="rows")

        class Meta:
            ref_name = "CellLayerFilter"

    @extend_schema(
        parameters=[FilterSerializer],
        responses={200: CellLayerOutputSerializer, **ERROR_RESPONSES},
    )
    def get(self, request: Request, slide_id: int) -> HttpResponse:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        slide = slide_get(slide_id=slide_id)
        audit_read(request=request, what="cells", target=slide)
        as_of = timezone.now()
        since = filters.validated_data.get("since")
        head: dict[str, Any] = {"fields": list(CELL_LAYER_FIELDS), "as_of": as_of.isoformat()}
        if filters.validated_data["layout"] == "columns":
            head["codes"] = {
                "current_class": list(CELL_LAYER_CLASSES),
                "predicted_class": list(CELL_LAYER_CLASSES),
                "review_status": list(CELL_LAYER_STATUSES),
            }
            head["confidence_scale"] = CONFIDENCE_SCALE
            columns = slide_cell_columns(slide_id=slide.pk, since=since)
            text = json.dumps(head, separators=(",", ":"))[:-1] + ',"columns":' + columns + "}"
        else:
            # Plain JSON, encoded once: the layer of a large slide is big and asked for often.
            head["rows"] = slide_cell_layer(slide_id=slide.pk, since=since)
            text = json.dumps(head, separators=(",", ":"))
        response = HttpResponse(text, content_type="application/json")
        response["Cache-Control"] = "no-store"
        return response


class DraftOutputSerializer(serializers.ModelSerializer[InterpretationDraft]):
    updated_by = StrictCharField(source="updated_by.username", default=None)

    class Meta:
        model = InterpretationDraft
        ref_name = "InterpretationDraft"
        fields = (
            "bethesda_category",
            "specimen_adequacy",
            "specimen_type",
            "report",
            "comment",
            "version",
            "updated_by",
            "updated_at",
        )


class SlideEventOutputSerializer(serializers.ModelSerializer[SlideEvent]):
    by = StrictCharField(source="by.username")

    class Meta:
        model = SlideEvent
        ref_name = "SlideEvent"
        fields = ("id", "kind", "by", "at", "reason", "before", "after")


class SuggestionOutputSerializer(serializers.Serializer):
    bethesda_category = StrictCharField(allow_blank=True)
    reviewed_counts = serializers.DictField(child=serializers.IntegerField())

    class Meta:
        ref_name = "InterpretationSuggestion"


class InterpretationStateSerializer(serializers.Serializer):
    status = StrictCharField()
    suggestion = SuggestionOutputSerializer()
    draft = DraftOutputSerializer(allow_null=True)
    interpretation = InterpretationOutputSerializer(allow_null=True)
    events = SlideEventOutputSerializer(many=True)

    class Meta:
        ref_name = "InterpretationState"


def _interpretation_state(slide: Slide) -> dict[str, Any]:
    draft = InterpretationDraft.objects.select_related("updated_by").filter(slide=slide).first()
    interpretation: Interpretation | None = getattr(slide, "interpretation", None)
    suggestion = interpretation_suggestion(slide_id=slide.pk)
    return dict(
        InterpretationStateSerializer(
            {
                "status": slide.status,
                "suggestion": suggestion,
                "draft": draft,
                "interpretation": interpretation,
                "events": slide_event_list(slide_id=slide.pk),
            }
        ).data
    )


class InterpretationInputSerializer(serializers.Serializer):
    """The structured Bethesda report as a reviewer fills it in (`report`: see
    papreview.workflow.bethesda.report_clean)."""

    bethesda_category = serializers.ChoiceField(choices=BETHESDA_CHOICES)
    specimen_adequacy = serializers.ChoiceField(
        choices=SpecimenAdequacy.choices, default=SpecimenAdequacy.SATISFACTORY
    )
    specimen_type = serializers.ChoiceField(
        choices=SpecimenType.choices, allow_blank=True, required=False, default=""
    )
    report = serializers.JSONField(required=False, default=dict, allow_null=True)  # null: none
    comment = StrictCharField(required=False, allow_blank=True, default="", max_length=5000)

    class Meta:
        ref_name = "InterpretationInput"


class SlideInterpretationApi(APIView):
    """The interpretation panel: the suggestion from the reviewed cells, the draft being edited,
    the signed-out interpretation, and the slide's events. PUT saves the draft: send the draft
    `version` you read (0 when there was none); a stale one answers 409 `stale_draft` with the
    current `draft`."""

    class InputSerializer(InterpretationInputSerializer):
        bethesda_category = serializers.ChoiceField(
            choices=BETHESDA_CHOICES, allow_blank=True, required=False, default=""
        )
        version = serializers.IntegerField(
            min_value=0,
            error_messages={
                "required": "Send the draft version you read (0 when there was no draft)."
            },
        )

        class Meta:
            ref_name = "InterpretationDraftInput"

    @extend_schema(responses={200: InterpretationStateSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, slide_id: int) -> Response:
        slide = slide_get(slide_id=slide_id)
        audit_read(request=request, what="interpretation", target=slide)
        return Response(_interpretation_state(slide))

    @extend_schema(
        request=InputSerializer, responses={200: InterpretationStateSerializer, **ERROR_RESPONSES}
    )
    def put(self, request: Request, slide_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        slide = slide_get(slide_id=slide_id)
        interpretation_draft_save(
            slide=slide, by=request_user(request), **serializer.validated_data
        )
        return Response(_interpretation_state(slide_get(slide_id=slide_id)))


class SlideAssignApi(APIView):
    """Assign the slide to a reviewer (`reviewer`: a user id, or null for nobody)."""

    class InputSerializer(serializers.Serializer):
        reviewer = serializers.PrimaryKeyRelatedField(
            queryset=User.objects.filter(is_active=True),
            allow_null=True,
            error_messages={"does_not_exist": "No active user with id {pk_value}."},
        )

        class Meta:
            ref_name = "SlideAssignInput"

    @extend_schema(
        request=InputSerializer, responses={200: SlideOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request, slide_id: int) -> Response:
        return slide_action_response(
            request, slide_id=slide_id, input_serializer=self.InputSerializer, action=slide_assign
        )


class ReviewerListApi(APIView):
    """Users a slide can be assigned to (`?role=pathologist` or `cytotechnologist`: one role)."""

    class FilterSerializer(serializers.Serializer):
        role = serializers.ChoiceField(
            choices=[Role.PATHOLOGIST.value, Role.CYTOTECHNOLOGIST.value], required=False
        )

        class Meta:
            ref_name = "ReviewerFilter"

    class OutputSerializer(serializers.ModelSerializer[User]):
        class Meta:
            model = User
            ref_name = "Reviewer"
            fields = ("id", "username", "first_name", "last_name")

    @extend_schema(
        parameters=[FilterSerializer],
        responses={200: OutputSerializer(many=True), **ERROR_RESPONSES},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        role = filters.validated_data.get("role")
        reviewers = reviewer_list(role=Role(role) if role else None)
        return Response(self.OutputSerializer(reviewers, many=True).data)


class SlideSignOutApi(APIView):
    """Set the slide-level interpretation (a structured Bethesda report) and sign the slide out.
    409 `flagged_cells_undecided` (with `undecided_cells`) while flagged cells more severe than
    the category are undecided; 403 for a category or slide the user's role may not sign out."""

    class InputSerializer(InterpretationInputSerializer):
        class Meta:
            ref_name = "SlideSignOutInput"

    @extend_schema(
        request=InputSerializer, responses={200: SlideOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request, slide_id: int) -> Response:
        return slide_action_response(
            request, slide_id=slide_id, input_serializer=self.InputSerializer, action=slide_sign_out
        )


class SlideReferApi(APIView):
    """Refer the slide to a pathologist (status `referred`) with the reason; `pathologist`: a
    user id, or null for any pathologist."""

    class InputSerializer(serializers.Serializer):
        reason = StrictCharField(max_length=MAX_REASON)
        pathologist = serializers.PrimaryKeyRelatedField(
            queryset=User.objects.filter(is_active=True, groups__name=Role.PATHOLOGIST.value),
            allow_null=True,
            required=False,
            default=None,
            error_messages={"does_not_exist": "No active pathologist with id {pk_value}."},
        )

        class Meta:
            ref_name = "SlideReferInput"

    @extend_schema(
        request=InputSerializer, responses={200: SlideOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request, slide_id: int) -> Response:
        return slide_action_response(
            request, slide_id=slide_id, input_serializer=self.InputSerializer, action=slide_refer
        )


class SlideReopenApi(APIView):
    """Reopen a signed-out slide for review: pathologists (and admins) only, with a reason, kept
    as a slide event (its interpretation stays until the slide is signed out again)."""

    class InputSerializer(serializers.Serializer):
        reason = StrictCharField(max_length=MAX_REASON)

        class Meta:
            ref_name = "SlideReopenInput"

    @extend_schema(
        request=InputSerializer, responses={200: SlideOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request, slide_id: int) -> Response:
        return slide_action_response(
            request, slide_id=slide_id, input_serializer=self.InputSerializer, action=slide_reopen
        )
