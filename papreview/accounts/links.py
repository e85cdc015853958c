"""One-time links sent by email: an invitation (set your password) and a password reset.

Both are Django's password-reset tokens: the link's hash covers the password hash, the last
sign-in and whether the account is active, so it stops working once used (the password changed),
after a sign-in, or when the account is deactivated; and it expires (ACCOUNT_INVITE_TTL_S for an
invitation, PASSWORD_RESET_TIMEOUT for a reset).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.encoding import force_bytes
from django.utils.http import base36_to_int, urlsafe_base64_encode


class AccountLinkTokenGenerator(PasswordResetTokenGenerator):
    """Django's reset token with its own salt and lifetime (the name of the setting)."""

    def __init__(self, *, key_salt: str, ttl_setting: str) -> None:
        super().__init__()
        self.key_salt = key_salt
        self.ttl_setting = ttl_setting

    def _make_hash_value(self, user: Any, timestamp: int) -> str:
        return f"{super()._make_hash_value(user, timestamp)}{user.is_active}"

    def check_token(self, user: Any, token: str | None) -> bool:
        try:
            ts = base36_to_int((token or "").split("-")[0])
        except ValueError:
            return False
        if not (user and token) or not any(
            constant_time_compare(self._make_token_with_timestamp(user, ts, secret), token)
            for secret in [self.secret, *self.secret_fallbacks]
        ):
            return False
        return self._num_seconds(self._now()) - ts <= int(getattr(settings, self.ttl_setting))


invite_tokens = AccountLinkTokenGenerator(
    key_salt="papreview.accounts.invite", ttl_setting="ACCOUNT_INVITE_TTL_S"
)
reset_tokens = AccountLinkTokenGenerator(
    key_salt="papreview.accounts.reset", ttl_setting="PASSWORD_RESET_TIMEOUT"
)


def link_expires(kind: str) -> datetime:
    ttl = settings.ACCOUNT_INVITE_TTL_S if kind == "invite" else settings.PASSWORD_RESET_TIMEOUT
    return timezone.now() + timedelta(seconds=ttl)


def account_link(*, user: Any, kind: str, request: HttpRequest | None) -> str:
    """The absolute URL of the invitation (`kind="invite"`) or reset link for the user."""
    tokens = invite_tokens if kind == "invite" else reset_tokens
    path = reverse(
        f"account-{kind}",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": tokens.make_token(user),
        },
    )
    base = settings.PAPREVIEW_BASE_URL.rstrip("/")
    if base:
        return base + path
    if request is not None:
        return request.build_absolute_uri(path)
    return "http://127.0.0.1:8000" + path
