from django.apps import AppConfig


class AnalysisConfig(AppConfig):
    name = "papreview.analysis"
    label = "analysis"
