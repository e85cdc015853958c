from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "papreview.registry"
    label = "registry"
    verbose_name = "Model registry"
