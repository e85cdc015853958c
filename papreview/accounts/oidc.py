"""Single sign-on with OpenID Connect (mozilla-django-oidc), on when OIDC_RP_CLIENT_ID is set.

* Users are matched by email (the library's default), made on their first sign-on with a
  username from the `preferred_username` claim (else the email).
* Their roles come from a claim (OIDC_ROLES_CLAIM, `roles` by default) at every sign-on: each
  value that OIDC_ROLE_MAP maps to a role, or that is a role's own name, gives that role; the
  others are ignored. No mapped value, no role (the "no role yet" page). Roles given on the users
  page to an SSO account are replaced at its next sign-on: the identity provider decides.
* Local accounts (username and password) still sign in on the same page.
* A session that came through SSO is not asked for our two-factor code: the identity provider
  is responsible for its second factor (`signed_in_via` in the session).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from papreview.accounts.roles import ROLE_NAMES, Role

SIGNED_IN_VIA_KEY = "signed_in_via"


def oidc_enabled() -> bool:
    return bool(settings.OIDC_RP_CLIENT_ID)


def roles_from_claims(claims: dict[str, Any]) -> list[Role]:
    raw = claims.get(settings.OIDC_ROLES_CLAIM) or []
    values = [raw] if isinstance(raw, str) else list(raw)
    mapping = {k.strip(): v.strip() for k, v in settings.OIDC_ROLE_MAP.items()}
    roles: list[Role] = []
    for value in values:
        name = mapping.get(str(value), str(value))
        if name in ROLE_NAMES and Role(name) not in roles:
            roles.append(Role(name))
    return roles


class RoleClaimOIDCBackend(OIDCAuthenticationBackend):
    def create_user(self, claims: dict[str, Any]) -> User:
        from papreview.accounts.services import user_create

        username = str(claims.get("preferred_username") or claims.get("email") or "")[:150]
        if not username or User.objects.filter(username__iexact=username).exists():
            username = str(claims.get("email", ""))[:150]
        user = user_create(
            username=username,
            password=None,
            role=Role.VIEWER,
            email=claims.get("email", ""),
            first_name=str(claims.get("given_name", ""))[:150],
            last_name=str(claims.get("family_name", ""))[:150],
        )
        return self.update_user(user, claims)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        from papreview.accounts.services import user_set_roles

        user_set_roles(user=user, roles=roles_from_claims(claims))
        return user

    def get_user(self, user_id: Any) -> User | None:
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        # Inactive accounts are found too (and refused by authenticate), never made anew.
        email = claims.get("email")
        if not email:
            return self.UserModel.objects.none()
        return self.UserModel.objects.filter(email__iexact=email)

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        user: User | None = super().authenticate(request, **kwargs)
        if user is not None and not user.is_active:
            return None
        return user


def _oidc_view(view_class_path: str) -> Any:
    from django.utils.module_loading import import_string

    @login_not_required
    def view(request: HttpRequest) -> HttpResponse:
        if not oidc_enabled():
            raise Http404("Single sign-on is not set up.")
        view_class = import_string(view_class_path)
        response: HttpResponse = view_class.as_view()(request)
        return response

    return view


oidc_authenticate = _oidc_view("mozilla_django_oidc.views.OIDCAuthenticationRequestView")
oidc_callback = _oidc_view("papreview.accounts.oidc_views.SignedInViaCallbackView")
