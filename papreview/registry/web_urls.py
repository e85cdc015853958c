from django.urls import path

from papreview.registry import views

# Pages, included at the site root.
urlpatterns = [
    path("models/", views.model_registry, name="model-registry"),
    path("models/retrain/", views.model_retrain, name="model-retrain"),
    path("models/rollback/", views.model_rollback, name="model-rollback"),
    path("models/<int:version_id>/activate/", views.model_activate, name="model-activate"),
    path("models/<int:version_id>/evaluate/", views.model_evaluate, name="model-evaluate"),
]
