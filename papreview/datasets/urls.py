from django.urls import path

from papreview.datasets import apis, registry_apis

# Included under /api/.
urlpatterns = [
    path("exports/", apis.DatasetExportListApi.as_view(), name="export-list"),
    path("exports/<int:export_id>/", apis.DatasetExportDetailApi.as_view(), name="export-detail"),
    path(
        "exports/<int:export_id>/download/",
        apis.DatasetExportDownloadApi.as_view(),
        name="export-download",
    ),
    path("model-versions/", registry_apis.ModelVersionListApi.as_view(), name="model-version-list"),
    path(
        "model-versions/<int:version_id>/activate/",
        registry_apis.ModelVersionActivateApi.as_view(),
        name="model-version-activate",
    ),
    path(
        "model-versions/rollback/",
        registry_apis.ModelVersionRollbackApi.as_view(),
        name="model-version-rollback",
    ),
    path("retrain-jobs/", registry_apis.RetrainJobListApi.as_view(), name="retrain-job-list"),
    path("evaluations/", registry_apis.ModelEvaluationListApi.as_view(), name="evaluation-list"),
    path("model-dashboard/", apis.ModelDashboardApi.as_view(), name="model-dashboard-api"),
]
