"""Two-factor sign-in (issue 18): enrolment with a QR code, recovery codes, the code step after
the password, the requirement for admins and pathologists, the token API. Codes are made with
pyotp from the secret the page shows, as an authenticator app would."""

from __future__ import annotations

import re
import time
from typing import Any

import pyotp
import pytest
from django.contrib.auth.models import User
from django.test import Client

from papreview.audit.models import AuditAction, AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "secret-pass-123"  # tests.factories.UserFactory


@pytest.fixture
def required(settings: Any) -> None:
    settings.TWO_FACTOR_REQUIRED_ROLES = ["admin", "pathologist"]


def password_step(client: Client, user: User, password: str = PASSWORD) -> Any:
    return client.post("/accounts/login/", {"username": user.username, "password": password})


def enrol(client: Client) -> tuple[pyotp.TOTP, list[str]]:
    """Set up two-factor on the page as a person would: read the key, type the app's code."""
    page = client.get("/accounts/two-factor/").content.decode()
    assert "<svg" in page and "QR code for your authenticator app" in page
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page)
    assert secret, page
    totp = pyotp.TOTP(secret.group(1).replace(" ", ""))
    done = client.post("/accounts/two-factor/", {"code": totp.now()}).content.decode()
    assert "Two-factor sign-in is on" in done
    codes = re.findall(r"<li>([a-z0-9]{8})</li>", done)
    assert len(codes) == 10
    return totp, codes


def next_code(totp: pyotp.TOTP) -> str:
    """The code of the next 30 s step (the one just used cannot be used again)."""
    return totp.at(time.time() + totp.interval)


def test_enrol_then_sign_in_with_a_code(pathologist: User) -> None:
    client = Client()
    assert password_step(client, pathologist).status_code == 302
    totp, _ = enrol(client)
    assert AuditEvent.objects.filter(action=AuditAction.TWO_FACTOR_ENROLLED).count() == 1

    fresh = Client()
    response = password_step(fresh, pathologist)
    assert response.status_code == 302 and response["Location"] == "/accounts/login/code/"
    assert fresh.get("/").status_code == 302, "the password alone does not sign in"
    bad = fresh.post("/accounts/login/code/", {"code": "123456"})
    assert b"That code is not right" in bad.content
    time.sleep(1.1)  # django-otp slows a device down after a wrong code (1 s, doubling)
    failed = AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED).latest("id")
    assert failed.data == {"username": pathologist.username, "why": "two_factor_code"}
    ok = fresh.post("/accounts/login/code/", {"code": next_code(totp)})
    assert ok.status_code == 302 and ok["Location"] == "/"
    assert fresh.get("/").status_code == 200
    # Used once: the same code does not sign in a second browser.
    again = Client()
    password_step(again, pathologist)
    assert b"not right" in again.post("/accounts/login/code/", {"code": next_code(totp)}).content


def test_a_recovery_code_works_once(viewer: User) -> None:
    client = Client()
    password_step(client, viewer)
    _, codes = enrol(client)
    first = Client()
    password_step(first, viewer)
    assert first.post("/accounts/login/code/", {"code": codes[0]}).status_code == 302
    page = first.get("/accounts/two-factor/")  # shows the message, and the count
    assert b"You signed in with a recovery code; 9 left" in page.content
    assert b"9 unused recovery codes left" in page.content
    second = Client()
    password_step(second, viewer)
    assert b"not right" in second.post("/accounts/login/code/", {"code": codes[0]}).content
    new = first.post("/accounts/two-factor/", {"action": "recovery"}).content.decode()
    assert len(set(re.findall(r"<li>([a-z0-9]{8})</li>", new)) - set(codes)) == 10


def test_wrong_codes_count_towards_the_lockout(viewer: User) -> None:
    client = Client()
    password_step(client, viewer)
    totp, _ = enrol(client)
    attacker = Client()
    password_step(attacker, viewer)
    for _ in range(5):
        attacker.post("/accounts/login/code/", {"code": "000001"})
    locked = attacker.post("/accounts/login/code/", {"code": next_code(totp)})
    assert locked.status_code == 429 and b"Too many failed logins" in locked.content


def test_admins_and_pathologists_must_set_it_up_first(
    required: None, pathologist: User, cytotech: User
) -> None:
    client = Client()
    assert password_step(client, pathologist).status_code == 302
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/accounts/two-factor/"
    assert client.get("/api/slides/").status_code == 403  # a session's API calls too
    page = client.get("/accounts/two-factor/")
    assert b"Your role needs two-factor sign-in" in page.content
    enrol(client)
    assert client.get("/").status_code == 200
    # A cytotechnologist is not asked (the setting names admin and pathologist).
    other = Client()
    password_step(other, cytotech)
    assert other.get("/").status_code == 200


def test_the_token_api_asks_for_the_code(required: None, pathologist: User, viewer: User) -> None:
    api = Client()
    body = {"username": pathologist.username, "password": PASSWORD}
    refused = api.post("/api/auth/token/", body)
    assert refused.status_code == 403 and refused.json()["code"] == "two_factor_required"
    browser = Client()
    password_step(browser, pathologist)
    totp, _ = enrol(browser)
    missing = api.post("/api/auth/token/", body)
    assert missing.status_code == 400 and missing.json()["code"] == "two_factor_code"
    assert api.post("/api/auth/token/", {**body, "code": "000000"}).status_code == 400
    time.sleep(1.1)  # the device's slow-down after a wrong code
    ok = api.post("/api/auth/token/", {**body, "code": next_code(totp)})
    assert ok.status_code == 200 and ok.json()["token"]
    # An account with no second factor and a role that does not need one: password alone.
    plain = api.post("/api/auth/token/", {"username": viewer.username, "password": PASSWORD})
    assert plain.status_code == 200


def test_the_admin_login_form_does_not_skip_the_code(admin_user: User) -> None:
    client = Client()
    password_step(client, admin_user)
    enrol(client)
    admin_login = Client().post(
        "/admin/login/", {"username": admin_user.username, "password": PASSWORD}
    )
    assert admin_login.status_code == 200 and b"two-factor" in admin_login.content


def test_an_admin_removes_a_lost_phone(admin_user: User, pathologist: User) -> None:
    phone = Client()
    password_step(phone, pathologist)
    enrol(phone)
    admin = Client()
    admin.force_login(admin_user)
    page = admin.post(f"/users/{pathologist.pk}/", {"action": "reset_two_factor"}, follow=True)
    assert b"two-factor sign-in was removed" in page.content
    assert phone.get("/").status_code == 302  # its sessions ended
    assert password_step(Client(), pathologist)["Location"] == "/"  # no code step any more
    assert AuditEvent.objects.filter(action=AuditAction.TWO_FACTOR_RESET).count() == 1


def test_the_qr_code_holds_the_otpauth_url(viewer: User) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from papreview.accounts.two_factor import totp_device_pending, totp_qr_svg

    device = totp_device_pending(user=viewer)
    assert isinstance(device, TOTPDevice) and not device.confirmed
    assert device.config_url.startswith("otpauth://totp/PapReview")
    svg = totp_qr_svg(device)
    assert svg.startswith("<svg") and "<path" in svg
    assert totp_device_pending(user=viewer).pk == device.pk  # the page can be reloaded
