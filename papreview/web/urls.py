from django.urls import path

from papreview.web import views

urlpatterns = [
    path("", views.review_queue, name="home"),
    path("upload/", views.upload_page, name="upload"),
    path("slides/<int:slide_id>/", views.slide_review, name="slide-review"),
    path("slides/<int:slide_id>/report/", views.slide_report, name="slide-report-page"),
]
