"""Account emails (invitation, password reset) through Django's email backend (EMAIL_URL)."""

from __future__ import annotations

import logging
import smtplib
from typing import Any

from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from papreview.core.exceptions import ApplicationError

logger = logging.getLogger(__name__)


class EmailNotSentError(ApplicationError):
    status_code = 502
    code = "email_not_sent"


def account_email_send(*, template: str, to: str, context: dict[str, Any]) -> None:
    """Render templates/accounts/email/<template>.txt (first line: the subject) and send it.

    Raises EmailNotSentError (with the reason, for the administrator) when the mail server
    refuses or cannot be reached."""
    text = render_to_string(f"accounts/email/{template}.txt", context)
    subject, _, body = text.strip().partition("\n")
    message = EmailMultiAlternatives(
        subject=subject.strip(), body=body.strip() + "\n", to=[to], from_email=None
    )
    try:
        message.send(fail_silently=False)
    except (smtplib.SMTPException, OSError) as exc:
        logger.warning("account email %s to user not sent: %s", template, exc)
        raise EmailNotSentError(
            f"The email could not be sent ({type(exc).__name__}: {exc}). Check the mail server "
            "settings (EMAIL_URL) and try again; nothing was changed."
        ) from exc
