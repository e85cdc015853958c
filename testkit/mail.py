"""A real SMTP server in the test process (aiosmtpd, on a free loopback port), and the app's
email settings pointed at it: tests read the messages the app sent over SMTP, and their links."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

LINK = re.compile(r"https?://\S+")


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._arrived:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.messages)} of {count} emails arrived")
                self._arrived.wait(left)
            return list(self.messages)

    @staticmethod
    def body(message: EmailMessage) -> str:
        part = message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())

    def last_link(self, to: str | None = None) -> str:
        """The first link in the newest message (to `to`, when given)."""
        self.wait(1)
        for message in reversed(self.messages):
            if to is None or to in str(message["To"]):
                found = LINK.search(self.body(message))
                assert found, self.body(message)
                return found.group(0)
        raise AssertionError(f"no email to {to}")


@pytest.fixture
def smtp_mail(settings: Any) -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    from testkit.stack import free_port

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "PapReview <papreview@lab.example>"
    try:
        yield mailbox
    finally:
        controller.stop()
