"""Security headers on every response: a Content-Security-Policy without inline script, a
Permissions-Policy that turns off what the app never uses, and `Cache-Control: no-store` on API
answers (patient data) unless a view chose its own caching (tiles: private, one hour), and
`Clear-Site-Data: "cache"` on logout so that no patient image stays in the browser's cache.

Hand-written rather than django-csp: one fixed policy, no nonces (the pages have no inline
script), and Django 6.0 brings CSP itself, which will replace this on upgrade.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # style attributes (OpenSeadragon sets them too)
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), bluetooth=(), "
    "interest-cohort=()"
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        if request.path_info.startswith("/api/") and "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        match = request.resolver_match
        if request.method == "POST" and match is not None and match.view_name == "logout":
            # the tiles and crops the browser kept (patient images) go with the session
            response.headers["Clear-Site-Data"] = '"cache"'
        return response
