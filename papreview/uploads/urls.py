from django.urls import path

from papreview.uploads.apis import UploadDetailApi, UploadListApi

urlpatterns = [
    path("", UploadListApi.as_view(), name="upload-list"),
    path("<uuid:upload_id>/", UploadDetailApi.as_view(), name="upload-detail"),
]
