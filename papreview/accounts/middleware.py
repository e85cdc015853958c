"""Pages for a signed-in account that has no role: none but signing out (and who am I).

The API refuses such accounts itself (`permissions.HasRole`, 403 `no_role`); this covers the HTML
pages and session-authenticated API calls, which would otherwise show patients and slides to
anyone an administrator created but never gave work to.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import resolve
from django.urls.exceptions import Resolver404

from papreview.accounts.roles import NO_ROLE_MESSAGE, user_roles

# What an account without a role may open: signing in and out, who it is, the health check.
OPEN_TO_NO_ROLE = {
    "login",
    "login-code",
    "logout",
    "healthz",
    "api-token",
    "api-me",
    "admin:login",
    "two-factor",
    "account-invite",
    "account-reset",
    "oidc_authentication_init",
    "oidc_authentication_callback",
}
# What an account that must set up two-factor may open before it has.
OPEN_BEFORE_TWO_FACTOR = OPEN_TO_NO_ROLE - {"api-token"}


class RoleRequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user.is_authenticated and not user_roles(user) and not _open(request.path_info):
            if request.path_info.startswith("/api/"):
                return JsonResponse({"detail": NO_ROLE_MESSAGE, "code": "no_role"}, status=403)
            response = TemplateResponse(
                request, "no_role.html", {"message": NO_ROLE_MESSAGE}, status=403
            )
            return response.render()
        return self.get_response(request)


class TwoFactorRequiredMiddleware:
    """An account whose role needs two-factor (TWO_FACTOR_REQUIRED_ROLES) and whose session has
    not given a code opens nothing but the two-factor page (to set it up, or to give the code of
    a device set up in another session). SSO sessions are exempt (the identity provider's
    second factor counts); API calls with a token are checked by the token endpoint."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from papreview.accounts.oidc import SIGNED_IN_VIA_KEY
        from papreview.accounts.two_factor import two_factor_required

        user = request.user
        if (
            user.is_authenticated
            and two_factor_required(user)  # roles: cached for the request, no new query
            and request.session.get(SIGNED_IN_VIA_KEY) != "oidc"
            and not user.is_verified()  # type: ignore[attr-defined]
            and not _open(request.path_info, OPEN_BEFORE_TWO_FACTOR)
        ):
            message = "Your role needs two-factor sign-in: set it up on the two-factor page first."
            if request.path_info.startswith("/api/"):
                return JsonResponse({"detail": message, "code": "two_factor_required"}, status=403)
            return redirect("two-factor")
        return self.get_response(request)


def _open(path: str, names: set[str] = OPEN_TO_NO_ROLE) -> bool:
    if path.startswith("/static/"):
        return True
    if path.startswith("/admin/") and names is OPEN_TO_NO_ROLE:
        return True  # the admin site checks staff and role itself
    try:
        match = resolve(path)
    except Resolver404:
        return True  # a 404 shows nothing
    return match.view_name in names
