"""The request being served, for audit events recorded deep inside services.

`AuditRequestMiddleware` puts the request in a context variable for the duration of the request;
`audit_record` takes the client's address (and, when no actor is given, the logged-in user) from
it. Outside a request (commands, Celery tasks) there is none and events carry no address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse

current_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)


def _valid_ip(value: str) -> str | None:
    value = value.strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def client_address(request: HttpRequest | None) -> str | None:
    """REMOTE_ADDR; behind a trusted proxy (AUDIT_TRUSTED_PROXIES) the first X-Forwarded-For.

    A client can write anything into X-Forwarded-For, so the header counts only when the
    connection comes from a proxy we run.
    """
    if request is None:
        return None
    remote = _valid_ip(str(request.META.get("REMOTE_ADDR", "")))
    trusted = set(getattr(settings, "AUDIT_TRUSTED_PROXIES", ()))
    if remote is not None and remote in trusted:
        forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")[0]
        return _valid_ip(forwarded) or remote
    return remote


class AuditRequestMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            current_request.reset(token)
