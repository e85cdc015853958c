"""Login lockout: too many failed logins lock a username for a while; an address is slowed.

Failed logins are audit events (papreview.audit), so every web process and the API agree on
the count without a shared cache. Within LOGIN_LOCKOUT_SECONDS (and since the username's last
successful login):

* a username with LOGIN_LOCKOUT_FAILURES failures from one address, or
  LOGIN_LOCKOUT_USERNAME_FAILURES from anywhere (guessing spread over many addresses), is locked
  until LOGIN_LOCKOUT_SECONDS after its last failure;
* an address with LOGIN_SLOWDOWN_ADDRESS_FAILURES failures (many usernames guessed from one
  place) is never locked, which behind a proxy or a hospital NAT would lock everyone: each
  further attempt from it must wait after its last failure, 1 s doubling per failure up to
  LOGIN_SLOWDOWN_MAX_S.

Every refusal is an audit event (`login_locked`, with why). The login form and the token API
check first and say so clearly; the backend refuses too, so no other login path (the admin's
login page) gets around it.

Why not django-axes: it keeps its own attempt tables beside our audit trail, which already
records every failure with its address and is what the audit log shows; the two would disagree.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import status

from papreview.audit.context import client_address
from papreview.audit.selectors import login_failures_recent
from papreview.core.exceptions import ApplicationError


class LoginLockedError(ApplicationError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "login_locked"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, extra={"retry_after": retry_after_s})
        self.retry_after_s = retry_after_s


def _locked_until(times: list[datetime], limit: int, window: timedelta) -> datetime | None:
    """`times`: the latest failures, newest first. Locked while `limit` of them fall within
    `window` and the newest is less than `window` ago."""
    if limit <= 0 or len(times) < limit:
        return None
    if times[0] - times[limit - 1] > window:
        return None
    return times[0] + window


def login_locked_until(*, username: str | None, address: str | None) -> datetime | None:
    """Until when this username (from this address) may not log in; None when it may."""
    if not username:
        return None
    window = timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
    since = timezone.now() - 2 * window
    until: list[datetime] = []
    rules: list[tuple[str | None, int]] = (
        [(address, settings.LOGIN_LOCKOUT_FAILURES)] if address else []
    )
    rules.append((None, settings.LOGIN_LOCKOUT_USERNAME_FAILURES))
    for where, limit in rules:
        times = login_failures_recent(username=username, address=where, limit=limit, since=since)
        if (t := _locked_until(times, limit, window)) is not None:
            until.append(t)
    latest = max(until, default=None)
    return latest if latest is not None and latest > timezone.now() else None


def login_slowed_until(*, address: str | None) -> datetime | None:
    """Until when an address that failed many logins must wait before its next try."""
    limit = settings.LOGIN_SLOWDOWN_ADDRESS_FAILURES
    if not address or limit <= 0:
        return None
    since = timezone.now() - timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
    times = login_failures_recent(address=address, limit=limit + 16, since=since)
    if len(times) < limit:
        return None
    wait = min(float(settings.LOGIN_SLOWDOWN_MAX_S), 2.0 ** (len(times) - limit))
    until = times[0] + timedelta(seconds=wait)
    return until if until > timezone.now() else None


def login_lockout_check(*, username: str | None, request: HttpRequest | None) -> None:
    """Raise LoginLockedError (with the time left) if the username is locked or the address must
    wait; the refusal is an audit event."""
    address = client_address(request)
    locked = login_locked_until(username=username, address=address)
    slowed = None if locked is not None else login_slowed_until(address=address)
    until = locked or slowed
    if until is None:
        return
    seconds = max(1, math.ceil((until - timezone.now()).total_seconds()))
    from papreview.audit.models import AuditAction
    from papreview.audit.services import audit_record

    audit_record(
        action=AuditAction.LOGIN_LOCKED,
        actor=None,
        username=username or "",
        request=request,
        data={"username": (username or "")[:150], "why": "locked" if locked else "slowed"},
    )
    if locked is None:
        raise LoginLockedError(
            f"Too many failed logins from your network: wait {seconds} second"
            f"{'s' if seconds != 1 else ''}, then try again.",
            retry_after_s=seconds,
        )
    minutes = max(1, math.ceil(seconds / 60))
    raise LoginLockedError(
        f"Too many failed logins: logging in is locked for {minutes} more minute"
        f"{'s' if minutes != 1 else ''}. Wait, then try again, or ask an administrator to check "
        "the account.",
        retry_after_s=seconds,
    )


class LockoutModelBackend(ModelBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if username is None:
            username = kwargs.get("username")
        address = client_address(request)
        if (
            login_locked_until(username=username, address=address) is not None
            or login_slowed_until(address=address) is not None
        ):
            raise PermissionDenied("login locked")
        return super().authenticate(request, username=username, password=password, **kwargs)


class LockoutAuthenticationForm(auth_forms.AuthenticationForm):
    """The login page's form: says clearly when the login is locked."""

    error_messages = {
        **auth_forms.AuthenticationForm.error_messages,
        "invalid_login": "Your username and password did not match. Please try again.",
    }

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        try:
            login_lockout_check(username=username, request=self.request)
        except LoginLockedError as exc:
            raise ValidationError(exc.message, code="login_locked") from exc
        return super().clean()


class LockoutAdminAuthenticationForm(LockoutAuthenticationForm):
    """The admin site's login form, with the same lockout message."""

    error_messages = {
        **auth_forms.AuthenticationForm.error_messages,
        "invalid_login": (
            "Please enter the correct %(username)s and password for a staff account. Note that "
            "both fields may be case-sensitive."
        ),
    }
    required_css_class = "required"

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )
        from papreview.accounts.two_factor import two_factor_enabled

        if two_factor_enabled(user):  # this form has no code: the app's sign-in page asks for it
            raise ValidationError(
                "Your account has two-factor sign-in: sign in on the PapReview sign-in page, "
                "then open the admin.",
                code="two_factor",
            )
