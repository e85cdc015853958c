"""Single sign-on (issue 18) in real Chromium against a real OpenID Connect provider: a Django
project with django-oauth-toolkit (testkit/oidc_provider) started by the test on loopback.

Users come from the provider, with their roles mapped from its `roles` claim; local accounts still
sign in with a password on the same page; an account deactivated here cannot sign on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from papreview.accounts.roles import Role, user_roles
from testkit.browser import PASSWORD, browser_page, screenshot
from testkit.oidc import IdentityProvider, identity_provider

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

IDP_USERS = [
    {
        "username": "sam.okafor",
        "password": "hospital-pass-77",
        "email": "sam.okafor@hospital.example",
        "first_name": "Sam",
        "last_name": "Okafor",
        "groups": ["cytology-pathologists", "all-staff"],
    },
    {
        "username": "lee.chen",
        "password": "hospital-pass-78",
        "email": "lee.chen@hospital.example",
        "groups": ["all-staff"],
    },
]


@pytest.fixture
def idp(live_server: Any, settings: Any) -> Iterator[IdentityProvider]:
    with identity_provider(
        redirect_uri=f"{live_server.url}/accounts/sso/callback/", users=IDP_USERS
    ) as provider:
        for name, value in provider.app_settings().items():
            setattr(settings, name, value)
        settings.AUTHENTICATION_BACKENDS = [
            "papreview.accounts.lockout.LockoutModelBackend",
            "papreview.accounts.oidc.RoleClaimOIDCBackend",
        ]
        settings.OIDC_PROVIDER_NAME = "St. Example Hospital"
        settings.OIDC_ROLE_MAP = {"cytology-pathologists": "pathologist"}
        # SSO sessions are not asked for our code: the provider handles its own second factor.
        settings.TWO_FACTOR_REQUIRED_ROLES = ["admin", "pathologist"]
        yield provider


def sign_on(page: Any, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_role("link", name="Sign in with St. Example Hospital").click()
    page.wait_for_url(re.compile(r"http://127\.0\.0\.1:\d+/accounts/login/"))
    page.get_by_label("Hospital username").fill(username)
    page.get_by_label("Hospital password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_single_sign_on_maps_roles_and_keeps_local_accounts(
    live_server: Any, browser: Any, idp: IdentityProvider, viewer: User
) -> None:
    base = live_server.url
    with browser_page(browser) as page:
        page.goto(f"{base}/accounts/login/")
        screenshot(page, "sso-login.png")
        sign_on(page, base, "sam.okafor", "hospital-pass-77")
        page.wait_for_url(f"{base}/")
        assert page.inner_text(".site-header .role") == "pathologist"
        screenshot(page, "sso-signed-in.png")
    sam = User.objects.get(email="sam.okafor@hospital.example")
    assert sam.username == "sam.okafor" and (sam.first_name, sam.last_name) == ("Sam", "Okafor")
    assert not sam.has_usable_password()
    assert user_roles(sam) == {Role.PATHOLOGIST}

    # A provider user whose groups map to no role gets an account with no role.
    with browser_page(browser) as page:
        sign_on(page, base, "lee.chen", "hospital-pass-78")
        page.wait_for_url(f"{base}/")
        assert "No role yet" in page.inner_text("main")
    assert user_roles(User.objects.get(username="lee.chen")) == frozenset()

    # Local accounts still sign in with their password.
    with browser_page(browser) as page:
        page.goto(f"{base}/accounts/login/")
        page.get_by_label("Username").fill(viewer.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        assert page.inner_text(".site-header .role") == "viewer"

    # An account deactivated here cannot sign on, whatever the provider says.
    sam.is_active = False
    sam.save()
    with browser_page(browser) as page:
        sign_on(page, base, "sam.okafor", "hospital-pass-77")
        page.wait_for_url(re.compile(r"/accounts/login/\?sso=failed"))
        assert "Single sign-on did not complete" in page.inner_text("main")
    assert User.objects.filter(email="sam.okafor@hospital.example").count() == 1
