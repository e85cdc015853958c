"""Thin API views of the model registry: model versions (list, gated activation, rollback) and
their evaluations on a test export."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.accounts.roles import user_is_admin
from papreview.analysis.models import ModelStage, ModelVersion
from papreview.core.api import ERROR_RESPONSES, StrictCharField, request_user
from papreview.core.exceptions import PermissionDeniedError
from papreview.datasets.selectors import dataset_export_get
from papreview.registry.activation import model_version_activate_by, model_version_rollback_by
from papreview.registry.models import ModelEvaluation, RetrainJob
from papreview.registry.retrain import retrain_job_request
from papreview.registry.selectors import (
    model_evaluation_list,
    model_version_get,
    model_version_list,
)
from papreview.registry.services import model_evaluation_request


class ModelVersionOutputSerializer(serializers.ModelSerializer[ModelVersion]):
    # The export's "name vN"; null for a version not trained on an export.
    training_export = serializers.SerializerMethodField()
    previous = StrictCharField(
        source="previous.name", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = ModelVersion
        ref_name = "ModelVersionRegistry"
        fields = (
            "id",
            "stage",
            "name",
            "sha256",
            "is_active",
            "activated_at",
            "previous",
            "training_data",
            "training_export",
            "metrics",
            "created_at",
        )

    @extend_schema_field(StrictCharField(allow_null=True))
    def get_training_export(self, mv: ModelVersion) -> str | None:
        training = getattr(mv, "training", None)  # none recorded: RelatedObjectDoesNotExist
        return str(training.export) if training is not None and training.export else None


class ModelVersionListApi(APIView):
    """Registered model versions of both stages (the active ones first)."""

    @extend_schema(responses={200: ModelVersionOutputSerializer(many=True), **ERROR_RESPONSES})
    def get(self, request: Request) -> Response:
        return Response(ModelVersionOutputSerializer(model_version_list(), many=True).data)


class ModelVersionActivateApi(APIView):
    """Make this version the active one of its stage (admins only; others get 403). New
    analyses use it; finished runs keep the versions they were made with.

    Gated: when its latest evaluation on a test split the active version was also evaluated on
    is worse on any compared figure, or it has no evaluation there, the answer is 409
    (`activation_refused`, with `figures`) unless `reason` is given; the reason and the figures
    are kept in the audit log."""

    class InputSerializer(serializers.Serializer):
        reason = StrictCharField(required=False, allow_blank=True, max_length=1000)

        class Meta:
            ref_name = "ModelVersionActivateInput"

    @extend_schema(
        request=InputSerializer, responses={200: ModelVersionOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request, version_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        mv = model_version_activate_by(
            model_version=model_version_get(version_id=version_id),
            by=request_user(request),
            reason=data.validated_data.get("reason", ""),
        )
        return Response(ModelVersionOutputSerializer(mv).data)


class ModelVersionRollbackApi(APIView):
    """Activate again the version of `stage` that was active before the current one (admins
    only; 409 when there is none). Each rollback goes one activation further back."""

    class InputSerializer(serializers.Serializer):
        stage = serializers.ChoiceField(choices=ModelStage.choices)

        class Meta:
            ref_name = "ModelVersionRollbackInput"

    @extend_schema(
        request=InputSerializer, responses={200: ModelVersionOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request) -> Response:
        user = request_user(request)
        if not user_is_admin(user):  # before the body, so that others always get 403
            raise PermissionDeniedError("Only an administrator may roll a model version back.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        mv = model_version_rollback_by(stage=data.validated_data["stage"], by=user)
        return Response(ModelVersionOutputSerializer(mv).data)


class ModelEvaluationOutputSerializer(serializers.ModelSerializer[ModelEvaluation]):
    class Meta:
        model = ModelEvaluation
        ref_name = "ModelEvaluation"
        fields = (
            "id",
            "model_version",
            "partner",
            "export",
            "split",
            "status",
            "metrics",
            "error",
        )


class ModelEvaluationListApi(APIView):
    """Evaluations on one export (GET ?export=ID); queue one (POST, admins only, 202)."""

    class InputSerializer(serializers.Serializer):
        model_version = serializers.IntegerField()
        export = serializers.IntegerField()
        split = serializers.ChoiceField(choices=["train", "val", "test"], default="test")
        partner = serializers.IntegerField(
            required=False,
            allow_null=True,
            default=None,
            help_text="Version of the other stage to pair it with (default: the active one).",
        )

        class Meta:
            ref_name = "ModelEvaluationInput"

    @extend_schema(responses={200: ModelEvaluationOutputSerializer(many=True), **ERROR_RESPONSES})
    def get(self, request: Request) -> Response:
        try:
            export_id = int(request.query_params.get("export", ""))
        except ValueError:
            export_id = None
        evaluations = model_evaluation_list(export_id=export_id)
        return Response(ModelEvaluationOutputSerializer(evaluations, many=True).data)

    @extend_schema(
        request=InputSerializer, responses={202: ModelEvaluationOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values: dict[str, Any] = data.validated_data
        evaluation = model_evaluation_request(
            model_version=model_version_get(version_id=values["model_version"]),
            export=dataset_export_get(export_id=values["export"]),
            split=values["split"],
            by=request_user(request),
            partner=(
                model_version_get(version_id=values["partner"])
                if values["partner"] is not None
                else None
            ),
        )
        return Response(
            ModelEvaluationOutputSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED
        )


class RetrainJobOutputSerializer(serializers.ModelSerializer[RetrainJob]):
    class Meta:
        model = RetrainJob
        ref_name = "RetrainJob"
        fields = (
            "id",
            "export",
            "status",
            "progress",
            "step",
            "from_scratch",
            "epochs",
            "base_detector",
            "base_classifier",
            "new_detector",
            "new_classifier",
            "comparison",
            "error",
            "created_at",
            "updated_at",
        )


class RetrainJobListApi(APIView):
    """Retraining jobs, newest first (GET, ?export=ID to filter; poll it for `progress`); queue
    one (POST, admins only, 202): both stages trained on the export on the `training` queue,
    fine-tuned from the active versions unless `from_scratch`, registered (not activated) and
    compared with the active versions on its test split (`comparison`)."""

    class InputSerializer(serializers.Serializer):
        export = serializers.IntegerField()
        from_scratch = serializers.BooleanField(default=False)
        epochs = serializers.IntegerField(required=False, min_value=1, max_value=1000)

        class Meta:
            ref_name = "RetrainJobInput"

    @extend_schema(responses={200: RetrainJobOutputSerializer(many=True), **ERROR_RESPONSES})
    def get(self, request: Request) -> Response:
        jobs = RetrainJob.objects.all()
        raw = request.query_params.get("export", "")
        if raw.isdigit():
            jobs = jobs.filter(export_id=int(raw))
        return Response(RetrainJobOutputSerializer(jobs[:50], many=True).data)

    @extend_schema(
        request=InputSerializer, responses={202: RetrainJobOutputSerializer, **ERROR_RESPONSES}
    )
    def post(self, request: Request) -> Response:
        user = request_user(request)
        if not user_is_admin(user):  # before the body, so that others always get 403
            raise PermissionDeniedError("Only an administrator may retrain the models.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values: dict[str, Any] = data.validated_data
        job = retrain_job_request(
            export=dataset_export_get(export_id=values["export"]),
            by=user,
            from_scratch=values["from_scratch"],
            epochs=values.get("epochs"),
        )
        return Response(RetrainJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)
