from django.apps import AppConfig


class CasesConfig(AppConfig):
    name = "papreview.cases"
    label = "cases"
