from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "papreview.web"
    verbose_name = "Pages (upload, review queue, slide review)"
