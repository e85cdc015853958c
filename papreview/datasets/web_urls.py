from django.urls import path

from papreview.datasets import registry_views, views

# Pages, included at the site root.
urlpatterns = [
    path("datasets/", views.export_list, name="export-list-page"),
    path("datasets/<int:export_id>/download/", views.export_download, name="export-download-page"),
    path("models/", registry_views.model_registry, name="model-registry"),
    path("models/retrain/", registry_views.model_retrain, name="model-retrain"),
    path("models/rollback/", registry_views.model_rollback, name="model-rollback"),
    path("models/<int:version_id>/activate/", registry_views.model_activate, name="model-activate"),
    path("models/<int:version_id>/evaluate/", registry_views.model_evaluate, name="model-evaluate"),
    path("models/dashboard/", views.dashboard, name="model-dashboard"),
    path("qc/<int:qc_review_id>/", views.qc_review, name="qc-review"),
]
