"""Pages for a signed-in account that has no role: none but signing out (and who am I).

The API refuses such accounts itself (`permissions.HasRole`, 403 `no_role`); this covers the HTML
pages and session-authenticated API calls, which would otherwise show patients and slides to
anyone an administrator created but never gave work to.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import resolve
from django.urls.exceptions import Resolver404

from papreview.accounts.roles import NO_ROLE_MESSAGE, user_roles

# What an account without a role may open: signing in and out, who it is, the health check.
OPEN_TO_NO_ROLE = {"login", "logout", "healthz", "api-token", "api-me", "admin:login"}


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


def _open(path: str) -> bool:
    if path.startswith(("/static/", "/admin/")):  # the admin site checks staff and role itself
        return True
    try:
        match = resolve(path)
    except Resolver404:
        return True  # a 404 shows nothing
    return match.view_name in OPEN_TO_NO_ROLE
