from django.urls import path

from papreview.uploads.apis import UploadDetailApi, UploadListApi
from papreview.uploads.slide_apis import SlideListApi

urlpatterns = [
    path("", UploadListApi.as_view(), name="upload-list"),
    path("<uuid:upload_id>/", UploadDetailApi.as_view(), name="upload-detail"),
]

slide_urlpatterns = [
    path("", SlideListApi.as_view(), name="slide-list"),
]
