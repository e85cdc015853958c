from django.urls import path

from papreview.registry import apis

# Included under /api/.
urlpatterns = [
    path("model-versions/", apis.ModelVersionListApi.as_view(), name="model-version-list"),
    path(
        "model-versions/<int:version_id>/activate/",
        apis.ModelVersionActivateApi.as_view(),
        name="model-version-activate",
    ),
    path(
        "model-versions/rollback/",
        apis.ModelVersionRollbackApi.as_view(),
        name="model-version-rollback",
    ),
    path("retrain-jobs/", apis.RetrainJobListApi.as_view(), name="retrain-job-list"),
    path("evaluations/", apis.ModelEvaluationListApi.as_view(), name="evaluation-list"),
]
