from django.apps import AppConfig


class UploadsConfig(AppConfig):
    name = "papreview.uploads"
    verbose_name = "Resumable uploads"
