from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "papreview.datasets"
    label = "datasets"
