from django.apps import AppConfig


class AuditConfig(AppConfig):
    """Append-only audit trail: who did what, when, from which address."""

    name = "papreview.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from papreview.audit import signals

        signals.connect()
