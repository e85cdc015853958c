from django.urls import path

from papreview.datasets import views

# Pages, included at the site root.
urlpatterns = [
    path("datasets/", views.export_list, name="export-list-page"),
    path("datasets/<int:export_id>/download/", views.export_download, name="export-download-page"),
    path("models/dashboard/", views.dashboard, name="model-dashboard"),
    path("qc/<int:qc_review_id>/", views.qc_review, name="qc-review"),
]
