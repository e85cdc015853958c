"""The users page (issue 18): invitations by real SMTP with a one-time, expiring link; roles;
deactivation and forced password resets that end sessions and API tokens at once; the audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from papreview.accounts.links import invite_tokens
from papreview.accounts.roles import Role, user_roles
from papreview.audit.models import AuditAction, AuditEvent
from papreview.core.mail import email_backend_description
from testkit.mail import Mailbox
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "secret-pass-123"  # tests.factories.UserFactory
NEW_PASSWORD = "amber-quarry-lantern-42"


def signed_in(user: User) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def sign_in_page(client: Client, username: str, password: str) -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password})


def invite(admin: Client, email: str, *roles: str, **extra: str) -> Any:
    return admin.post("/users/", {"email": email, "roles": list(roles), **extra})


def path_of(link: str) -> str:
    return urlsplit(link).path


def test_an_invitation_is_emailed_and_its_link_sets_the_password_once(
    admin_user: User, smtp_mail: Mailbox
) -> None:
    admin = signed_in(admin_user)
    response = invite(admin, "Dana.Reed@lab.example", "pathologist", "viewer", first_name="Dana")
    assert response.status_code == 302, response.content.decode()[:2000]
    user = User.objects.get(email="dana.reed@lab.example")
    assert user.username == "dana.reed@lab.example" and not user.has_usable_password()
    assert user_roles(user) == {Role.PATHOLOGIST, Role.VIEWER}

    [message] = smtp_mail.wait(1)
    assert smtp_mail.envelopes[0][1] == ["dana.reed@lab.example"]
    assert message["Subject"] == "You are invited to PapReview"
    body = smtp_mail.body(message)
    assert "pathologist, viewer" in body and "dana.reed@lab.example" in body
    link = smtp_mail.last_link()
    assert link.startswith("http://testserver/accounts/invite/")

    anonymous = Client()
    page = anonymous.get(path_of(link), follow=True)  # the token moves into the session
    assert b"Welcome to PapReview" in page.content
    form_url = page.redirect_chain[-1][0]
    weak = anonymous.post(form_url, {"new_password1": "1234", "new_password2": "1234"})
    assert weak.status_code == 200 and b"too short" in weak.content
    done = anonymous.post(
        form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}, follow=True
    )
    assert b"Your password is set" in done.content
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    # One use: the same link no longer works, even in a fresh browser.
    again = Client().get(path_of(link), follow=True)
    assert b"This link no longer works" in again.content
    actions = set(
        AuditEvent.objects.filter(target_id=str(user.pk)).values_list("action", flat=True)
    )
    assert {AuditAction.USER_INVITED, AuditAction.USER_CREATED, AuditAction.PASSWORD_SET} <= actions
    invited = AuditEvent.objects.get(action=AuditAction.USER_INVITED)
    assert invited.actor_username == admin_user.username
    assert invited.data["roles"] == ["pathologist", "viewer"]


def test_an_invitation_link_expires(admin_user: User, smtp_mail: Mailbox, settings: Any) -> None:
    settings.ACCOUNT_INVITE_TTL_S = 3600
    invite(signed_in(admin_user), "late@lab.example", "viewer")
    user = User.objects.get(email="late@lab.example")
    token = path_of(smtp_mail.last_link()).rstrip("/").split("/")[-1]
    assert invite_tokens.check_token(user, token)
    later = timezone.now() + timedelta(seconds=3601)
    invite_tokens._now = lambda: later.replace(tzinfo=None)  # type: ignore[method-assign]
    try:
        assert not invite_tokens.check_token(user, token)
        page = Client().get(path_of(smtp_mail.last_link()), follow=True)
        assert b"This link no longer works" in page.content
    finally:
        del invite_tokens._now


def test_a_mail_server_that_cannot_be_reached_leaves_no_account(
    admin_user: User, settings: Any
) -> None:
    from testkit.stack import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    response = invite(signed_in(admin_user), "nobody@lab.example", "viewer")
    assert response.status_code == 400
    assert b"The email could not be sent" in response.content
    assert not User.objects.filter(email="nobody@lab.example").exists()


def test_invitations_refuse_duplicates_and_no_role(admin_user: User, viewer: User) -> None:
    admin = signed_in(admin_user)
    assert b"already exists" in invite(admin, viewer.email, "viewer").content
    assert b"This field is required" in invite(admin, "new@lab.example").content


def test_the_list_shows_roles_last_sign_in_status_and_two_factor(
    admin_user: User, pathologist: User, viewer: User, django_assert_max_num_queries: Any
) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.create(user=pathologist, name="app", confirmed=True)
    viewer.is_active = False
    viewer.save()
    admin = signed_in(admin_user)
    UserFactory.create_batch(5, role=Role.CYTOTECHNOLOGIST)
    with django_assert_max_num_queries(12):  # not one query per user
        page = admin.get("/users/").content.decode()
    row = page[page.index(f'data-user="{pathologist.username}"') :]
    row = row[: row.index("</tr>")]
    assert "role-pathologist" in row and "tf-on" in row and "Active" in row
    assert "never" in row  # pathologist never signed in
    vrow = page[page.index(f'data-user="{viewer.username}"') :]
    assert "Deactivated" in vrow[: vrow.index("</tr>")]
    assert "Groups" not in page and "Staff status" not in page and "permission" not in page
    only_inactive = admin.get("/users/", {"status": "inactive"}).content.decode()
    assert viewer.username in only_inactive and pathologist.username not in only_inactive


def test_only_admins_open_the_users_page(pathologist: User, viewer: User) -> None:
    for user in (pathologist, viewer):
        client = signed_in(user)
        assert client.get("/users/").status_code == 403
        assert (
            client.post("/users/", {"email": "x@lab.example", "roles": ["admin"]}).status_code
            == 403
        )
        assert (
            client.post(f"/users/{user.pk}/", {"action": "roles", "roles": ["admin"]}).status_code
            == 403
        )
    assert user_roles(viewer) == {Role.VIEWER}


def test_role_change_is_audited_and_revokes_tokens_when_a_role_goes(
    admin_user: User, pathologist: User, api: Any
) -> None:
    admin = signed_in(admin_user)
    client = api(pathologist)
    assert client.get("/api/auth/me/").status_code == 200
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    response = admin.post(
        f"/users/{pathologist.pk}/", {"action": "roles", "roles": ["cytotechnologist"]}
    )
    assert response.status_code == 302
    fresh = User.objects.get(pk=pathologist.pk)
    assert user_roles(fresh) == {Role.CYTOTECHNOLOGIST}
    assert client.get("/api/auth/me/").status_code == 401  # the token ended with the role
    changes = AuditEvent.objects.filter(
        action=AuditAction.ROLES_CHANGED, target_id=str(pathologist.pk), id__gt=before
    )
    assert {tuple(e.data.get("removed", e.data.get("added", []))) for e in changes} >= {
        ("pathologist",),
        ("cytotechnologist",),
    }
    assert all(e.actor_username == admin_user.username for e in changes)


def test_an_admin_cannot_lock_themselves_out(admin_user: User) -> None:
    admin = signed_in(admin_user)
    page = admin.post(
        f"/users/{admin_user.pk}/", {"action": "roles", "roles": ["viewer"]}, follow=True
    )
    assert b"cannot take away your own admin role" in page.content
    assert admin.post(f"/users/{admin_user.pk}/", {"action": "deactivate"}).status_code == 302
    assert User.objects.get(pk=admin_user.pk).is_active
    superuser = UserFactory.create(is_superuser=True)
    page = admin.post(f"/users/{superuser.pk}/", {"action": "deactivate"}, follow=True)
    assert b"Only a superuser" in page.content and User.objects.get(pk=superuser.pk).is_active


def test_deactivation_ends_open_sessions_and_tokens_at_once(
    admin_user: User, cytotech: User, api: Any
) -> None:
    session = Client()
    assert sign_in_page(session, cytotech.username, PASSWORD).status_code == 302
    assert session.get("/").status_code == 200
    token_client = api(cytotech)
    admin = signed_in(admin_user)
    page = admin.post(f"/users/{cytotech.pk}/", {"action": "deactivate"}, follow=True)
    assert b"signed out of 1 session" in page.content
    assert session.get("/").status_code == 302  # the open session ended
    assert token_client.get("/api/auth/me/").status_code == 401
    assert not signed_in_ok(cytotech)
    ended = AuditEvent.objects.get(action=AuditAction.SESSIONS_ENDED)
    assert ended.data == {"user": cytotech.username, "sessions": 1, "why": "deactivated"}
    assert AuditEvent.objects.filter(
        action=AuditAction.USER_CHANGED, data__changes__is_active=[True, False]
    ).exists()
    admin.post(f"/users/{cytotech.pk}/", {"action": "reactivate"})
    assert signed_in_ok(cytotech)


def signed_in_ok(user: User) -> bool:
    return sign_in_page(Client(), user.username, PASSWORD).status_code == 302


def test_a_forced_reset_stops_the_password_and_emails_a_link(
    admin_user: User, viewer: User, smtp_mail: Mailbox, api: Any
) -> None:
    session = signed_in(viewer)
    token_client = api(viewer)
    admin = signed_in(admin_user)
    page = admin.post(f"/users/{viewer.pk}/", {"action": "reset_password"}, follow=True)
    assert b"no longer works" in page.content
    assert (
        session.get("/").status_code == 302 and token_client.get("/api/auth/me/").status_code == 401
    )
    assert not signed_in_ok(viewer)
    [message] = smtp_mail.wait(1)
    assert message["Subject"] == "Reset your PapReview password" and message["To"] == viewer.email
    anonymous = Client()
    page = anonymous.get(path_of(smtp_mail.last_link()), follow=True)
    form_url = page.redirect_chain[-1][0]
    anonymous.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert sign_in_page(Client(), viewer.username, NEW_PASSWORD).status_code == 302
    assert AuditEvent.objects.filter(action=AuditAction.PASSWORD_RESET_SENT).count() == 1


def test_the_console_backend_is_the_default_and_says_so(settings: Any) -> None:
    from papreview.settings import base

    assert base.EMAIL_BACKEND == "django.core.mail.backends.console.EmailBackend"
    settings.EMAIL_BACKEND = base.EMAIL_BACKEND
    assert "console backend" in email_backend_description()


def test_django_admin_users_and_groups_are_for_superusers_only(admin_user: User) -> None:
    admin = signed_in(admin_user)
    assert admin.get("/admin/auth/user/").status_code == 403
    assert admin.get("/admin/auth/group/").status_code == 403
    assert b"/admin/auth/user/" not in admin.get("/admin/").content
    superuser = UserFactory.create(is_superuser=True, is_staff=True)
    assert signed_in(superuser).get("/admin/auth/user/").status_code == 200


@pytest.mark.parametrize("password", ["1234", "weakling-admin", "password1"])
def test_createsuperuser_without_input_applies_the_password_rules(
    password: str, monkeypatch: Any
) -> None:
    from django.core.management import CommandError, call_command

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", password)
    with pytest.raises(CommandError, match="DJANGO_SUPERUSER_PASSWORD"):
        call_command(
            "createsuperuser", interactive=False, username="weakling", email="w@lab.example"
        )
    assert not User.objects.filter(username="weakling").exists()
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", NEW_PASSWORD)
    call_command("createsuperuser", interactive=False, username="weakling", email="w@lab.example")
    assert User.objects.get(username="weakling").check_password(NEW_PASSWORD)


def test_single_sign_on_roles_come_from_the_claim(settings: Any) -> None:
    from papreview.accounts.oidc import roles_from_claims

    settings.OIDC_ROLES_CLAIM = "groups"
    settings.OIDC_ROLE_MAP = {"cyto-path": "pathologist", "cyto-screen": "cytotechnologist"}
    assert roles_from_claims({"groups": ["cyto-path", "all-staff", "viewer"]}) == [
        Role.PATHOLOGIST,
        Role.VIEWER,
    ]
    assert roles_from_claims({"groups": "cyto-screen"}) == [Role.CYTOTECHNOLOGIST]
    assert roles_from_claims({"roles": ["admin"]}) == []  # another claim: ignored
    assert roles_from_claims({}) == []
