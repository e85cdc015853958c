from django.urls import path

from papreview.datasets import apis

# Included under /api/.
urlpatterns = [
    path("exports/", apis.DatasetExportListApi.as_view(), name="export-list"),
    path("exports/<int:export_id>/", apis.DatasetExportDetailApi.as_view(), name="export-detail"),
    path(
        "exports/<int:export_id>/download/",
        apis.DatasetExportDownloadApi.as_view(),
        name="export-download",
    ),
    path("model-dashboard/", apis.ModelDashboardApi.as_view(), name="model-dashboard-api"),
]
