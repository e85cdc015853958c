"""The lab manager's whole path in real Chromium (issue 18): invite -> email (real SMTP) -> set
password -> set up two-factor -> sign in with a code -> role change -> deactivate, which ends the
invitee's open session. Screenshots in tests/_artifacts/users-*.png."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import pyotp
import pytest
from django.contrib.auth.models import User
from django_otp.plugins.otp_totp.models import TOTPDevice

from papreview.accounts.roles import Role, user_roles
from papreview.audit.models import AuditAction, AuditEvent
from testkit.browser import PASSWORD, browser_page, screenshot
from testkit.mail import Mailbox

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "amber-quarry-lantern-42"


def app_totp(device: TOTPDevice) -> pyotp.TOTP:
    return pyotp.TOTP(base64.b32encode(device.bin_key).decode())


def sign_in(page: Any, base: str, username: str, password: str, totp: pyotp.TOTP | None) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    if totp is not None:
        page.wait_for_url(f"{base}/accounts/login/code/")
        page.get_by_label("Code").fill(totp.at(time.time() + totp.interval))
        page.get_by_role("button", name="Verify").click()


def test_invite_to_deactivation(live_server, browser, admin_user, smtp_mail: Mailbox, settings):
    settings.TWO_FACTOR_REQUIRED_ROLES = ["admin", "pathologist"]
    base = live_server.url
    device = TOTPDevice.objects.create(user=admin_user, name="Authenticator app", confirmed=True)
    admin_user.first_name, admin_user.last_name = "Maria", "Lopez"
    admin_user.save()

    with browser_page(browser) as manager, browser_page(browser) as invitee:
        # The manager signs in (password, then the code) and invites a pathologist.
        sign_in(manager, base, admin_user.username, PASSWORD, app_totp(device))
        manager.wait_for_url(f"{base}/")
        manager.get_by_role("link", name="Users").click()
        manager.wait_for_url(f"{base}/users/")
        form = manager.locator("form#invite")
        form.get_by_label("Email").fill("dana.reed@lab.example")
        form.get_by_label("First name").fill("Dana")
        form.get_by_label("Last name").fill("Reed")
        form.get_by_label("Viewer: reads slides").uncheck()
        form.get_by_label("Pathologist: reviews and signs out").check()
        form.scroll_into_view_if_needed()
        screenshot(manager, "users-invite.png")
        form.get_by_role("button", name="Send invitation").click()
        manager.wait_for_url(f"{base}/users/")
        assert "Invitation sent to dana.reed@lab.example" in manager.inner_text("main")
        row = manager.locator('tr[data-user="dana.reed@lab.example"]')
        assert "Invited" in row.inner_text() and "pathologist" in row.inner_text()

        # The email arrives over SMTP; the invitee follows its link and chooses a password.
        [message] = smtp_mail.wait(1)
        assert message["To"] == "dana.reed@lab.example"
        assert "Maria Lopez has created a PapReview account for you" in smtp_mail.body(message)
        invitee.goto(smtp_mail.last_link())
        assert "Welcome to PapReview" in invitee.inner_text("main")
        invitee.get_by_label("New password").fill("dana12345")
        invitee.get_by_label("Repeat it").fill("dana12345")
        invitee.get_by_role("button", name="Set password").click()
        assert "too short" in invitee.inner_text("main")
        invitee.get_by_label("New password").fill(NEW_PASSWORD)
        invitee.get_by_label("Repeat it").fill(NEW_PASSWORD)
        screenshot(invitee, "users-set-password.png")
        invitee.get_by_role("button", name="Set password").click()
        invitee.wait_for_url(f"{base}/accounts/login/")
        assert "you will then set up two-factor" in invitee.inner_text("main")

        # First sign-in: a pathologist must set up two-factor before anything else.
        sign_in(invitee, base, "dana.reed@lab.example", NEW_PASSWORD, None)
        invitee.wait_for_url(f"{base}/accounts/two-factor/")
        assert "Your role needs two-factor sign-in" in invitee.inner_text("main")
        assert invitee.locator("figure.qr svg").is_visible()
        screenshot(invitee, "users-two-factor-setup.png")
        secret = invitee.inner_text("#totp-secret").replace(" ", "")
        totp = pyotp.TOTP(secret)
        invitee.get_by_label("6-digit code").fill(totp.now())
        invitee.get_by_role("button", name="Turn on two-factor").click()
        assert "Two-factor sign-in is on" in invitee.inner_text("main")
        codes = invitee.locator("#recovery-codes li").all_inner_texts()
        assert len(codes) == 10 and all(re.fullmatch(r"[a-z0-9]{8}", c) for c in codes)
        screenshot(invitee, "users-recovery-codes.png")
        invitee.get_by_role("link", name="Done").click()
        invitee.wait_for_url(f"{base}/")

        # Sign out, and in again: password, then the app's code.
        invitee.get_by_role("button", name="Log out").click()
        invitee.wait_for_url(f"{base}/accounts/login/")
        sign_in(invitee, base, "dana.reed@lab.example", NEW_PASSWORD, totp)
        invitee.wait_for_url(f"{base}/")
        assert invitee.inner_text(".site-header .role") == "pathologist"

        # The manager sees two-factor on, and changes the role to cytotechnologist.
        manager.reload()
        row = manager.locator('tr[data-user="dana.reed@lab.example"]')
        assert "On" in row.locator("td.tf").inner_text() and "Active" in row.inner_text()
        row.get_by_role("link", name="Manage").click()
        manager.get_by_label("Pathologist: reviews and signs out").uncheck()
        manager.get_by_label("Cytotechnologist: reviews cells").check()
        manager.get_by_role("button", name="Save roles").click()
        assert "now has: cytotechnologist" in manager.inner_text("main")
        screenshot(manager, "users-detail.png")
        invitee.reload()
        assert invitee.inner_text(".site-header .role") == "cytotechnologist"

        # Deactivation ends the invitee's open session at once.
        manager.get_by_role("button", name="Deactivate").click()
        assert "is deactivated: signed out of 1 session" in manager.inner_text("main")
        invitee.goto(f"{base}/")
        invitee.wait_for_url(re.compile(r"/accounts/login/"))
        manager.get_by_role("link", name="Users", exact=True).first.click()
        row = manager.locator('tr[data-user="dana.reed@lab.example"]')
        assert "Deactivated" in row.inner_text()
        screenshot(manager, "users-list.png")

    dana = User.objects.get(username="dana.reed@lab.example")
    assert not dana.is_active and user_roles(dana) == frozenset()
    dana.is_active = True  # roles are still there; only the account is off
    assert user_roles(dana) == {Role.CYTOTECHNOLOGIST}
    actions = list(
        AuditEvent.objects.filter(target_id=str(dana.pk), target_type="auth.user")
        .order_by("id")
        .values_list("action", flat=True)
    )
    for expected in (
        AuditAction.USER_INVITED,
        AuditAction.PASSWORD_SET,
        AuditAction.TWO_FACTOR_ENROLLED,
        AuditAction.ROLES_CHANGED,
        AuditAction.SESSIONS_ENDED,
    ):
        assert expected in actions, (expected, actions)
