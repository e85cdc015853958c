from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Shared pieces: errors, pagination, health check, management commands."""

    name = "papreview.core"
    label = "core"
    verbose_name = "PapReview core"
