from django.apps import AppConfig


class ImagingConfig(AppConfig):
    name = "papreview.imaging"
    verbose_name = "Slide imaging (Deep Zoom tiles, cell crops)"
