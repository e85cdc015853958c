"""Where the app's emails go, said once when it starts (`manage.py runstack`)."""

from __future__ import annotations

from django.conf import settings


def email_backend_description() -> str:
    """One line for the start of the app: where account emails go."""
    backend = settings.EMAIL_BACKEND
    if backend.endswith("console.EmailBackend"):
        return (
            "Email: console backend (the embedded default): invitations and password resets are "
            "printed by the web server, not sent. Set EMAIL_URL=smtp://host:25 to send them."
        )
    if backend.endswith("smtp.EmailBackend"):
        return f"Email: SMTP via {settings.EMAIL_HOST}:{settings.EMAIL_PORT}."
    return f"Email: {backend}."
