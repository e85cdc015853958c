"""Accounts: lockout after repeated failed logins (login page, admin login and token API; per
username and per address), password validators, production cookie settings, no secrets in the
repository, no patient identifier in the logs."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.forms import AdminUserCreationForm
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from papreview.audit.models import AuditAction, AuditEvent
from tests.factories import UserFactory, upload

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "secret-pass-123"  # tests.factories.UserFactory


def login_page(client: Any, username: str, password: str, addr: str = "10.0.0.1") -> Any:
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=addr
    )


def token(client: Any, username: str, password: str, addr: str = "10.0.0.1") -> Any:
    return client.post(
        "/api/auth/token/", {"username": username, "password": password}, REMOTE_ADDR=addr
    )


def test_five_failures_lock_the_username_on_the_login_page(client, pathologist) -> None:
    for _ in range(4):
        assert b"did not match" in login_page(client, pathologist.username, "x").content
    # A success before the fifth failure starts the count again.
    assert login_page(client, pathologist.username, PASSWORD).status_code == 302
    client.logout()
    for _ in range(5):
        login_page(client, pathologist.username, "bad")
    response = login_page(client, pathologist.username, PASSWORD)
    assert response.status_code == 200, "the right password does not get in while locked"
    text = response.content.decode()
    assert "Too many failed logins: logging in is locked for 15 more minutes" in text
    assert "_auth_user_id" not in client.session
    # Locked attempts are refused before the password is checked: they add no failures.
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED).count() == 9
    # The admin's login page (another form, same backend) is locked as well, from that address;
    # from another one the person can still sign in (a guesser cannot lock them out).
    admin_page = client.post(
        "/admin/login/",
        {"username": pathologist.username, "password": PASSWORD},
        REMOTE_ADDR="10.0.0.1",
    )
    assert admin_page.status_code == 200 and b"Too many failed logins" in admin_page.content
    assert login_page(client, pathologist.username, PASSWORD, addr="10.0.0.7").status_code == 302


def test_token_api_locks_too_with_a_clear_429(api, cytotech) -> None:
    client = api(None)
    for _ in range(5):
        assert token(client, cytotech.username, "bad").status_code == 400
    response = token(client, cytotech.username, PASSWORD)
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "login_locked" and "locked for 15 more minutes" in body["detail"]
    assert 890 <= body["retry_after"] <= 900
    # Another user from another address is not affected.
    other = UserFactory.create()
    assert token(client, other.username, PASSWORD, addr="10.0.0.2").status_code == 200


def test_an_address_guessing_many_usernames_is_slowed_not_locked(client, settings, viewer) -> None:
    """Behind a proxy or a hospital NAT one address is everybody: it is slowed, never locked."""
    settings.LOGIN_SLOWDOWN_ADDRESS_FAILURES = 10
    for i in range(10):
        login_page(client, f"guess{i}", "bad", addr="10.6.6.6")
    refused = login_page(client, viewer.username, PASSWORD, addr="10.6.6.6")
    assert b"Too many failed logins from your network: wait 1 second" in refused.content
    assert login_page(client, viewer.username, PASSWORD, addr="10.6.6.7").status_code == 302
    client.logout()
    time.sleep(1.1)  # the wait (1 s after the 10th failure, doubling with each further one)
    assert login_page(client, viewer.username, PASSWORD, addr="10.6.6.6").status_code == 302


def test_the_lock_ends_after_the_lockout_time(client, settings, viewer) -> None:
    settings.LOGIN_LOCKOUT_SECONDS = 1
    for _ in range(5):
        login_page(client, viewer.username, "bad")
    assert b"Too many failed logins" in login_page(client, viewer.username, PASSWORD).content
    time.sleep(1.1)
    assert login_page(client, viewer.username, PASSWORD).status_code == 302


@pytest.mark.parametrize(
    "password",
    ["short1!", "password123", "1234567890123", "jane.doe.example", "qwertyuiop"],
)
def test_weak_passwords_are_refused(password: str) -> None:
    user = UserFactory.build(username="jane.doe", email="jane.doe@example.org")
    with pytest.raises(ValidationError):
        validate_password(password, user)


def test_the_admin_user_form_applies_the_validators() -> None:
    weak: AdminUserCreationForm[User] = AdminUserCreationForm(
        data={
            "username": "nurse",
            "password1": "nurse1234",
            "password2": "nurse1234",
            "usable_password": "true",
        }
    )
    assert not weak.is_valid() and "password2" in weak.errors
    strong: AdminUserCreationForm[User] = AdminUserCreationForm(
        data={
            "username": "nurse",
            "password1": "violet-harbour-lantern-9",
            "password2": "violet-harbour-lantern-9",
            "usable_password": "true",
        }
    )
    assert strong.is_valid(), strong.errors


def test_production_cookies_are_secure() -> None:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: getattr(s, k) for k in ("
        "'SESSION_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', 'SESSION_COOKIE_SAMESITE', "
        "'SESSION_COOKIE_AGE', 'CSRF_COOKIE_SECURE', 'CSRF_COOKIE_SAMESITE', 'DEBUG', "
        "'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'X_FRAME_OPTIONS')}))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "papreview.settings.production",
        "SECRET_KEY": "x" * 60,
        "ALLOWED_HOSTS": "papreview.example.org",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    values = json.loads(out.stdout.strip().splitlines()[-1])
    assert values["SESSION_COOKIE_SECURE"] and values["SESSION_COOKIE_HTTPONLY"]
    assert values["CSRF_COOKIE_SECURE"] and values["DEBUG"] is False
    assert values["SESSION_COOKIE_SAMESITE"] == values["CSRF_COOKIE_SAMESITE"] == "Lax"
    assert values["SESSION_COOKIE_AGE"] <= 12 * 3600
    assert values["SECURE_SSL_REDIRECT"] and values["SECURE_HSTS_SECONDS"] >= 31_536_000
    assert values["X_FRAME_OPTIONS"] == "DENY"
    # `manage.py check --deploy` passes with these settings:
    # tests/core/test_settings_and_commands.py::test_production_settings_pass_check_deploy


# Patterns of credentials that must never be committed (split so this file does not match).
_BEGIN = "-----BEGIN"
SECRET_PATTERNS = {
    "private key": re.compile(_BEGIN + r" (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret": re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "Stripe key": re.compile(r"\b[sr]k_live_[0-9a-zA-Z]{20,}"),
    "API token in a header": re.compile(r"Authorization:\s*Token\s+[0-9a-f]{40}\b"),
    "Django secret key": re.compile(
        r"SECRET_KEY\s*[:=]\s*['\"](?!django-insecure)[^'\"\s]{30,}['\"]"
    ),
}


def test_no_secrets_in_the_tracked_files() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found: list[str] = []
    for raw in files:
        if not raw:
            continue
        path = ROOT / raw.decode()
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary (images, weights)
            continue
        text = data.decode("utf-8", errors="replace")
        found += [
            f"{raw.decode()}: {name}" for name, rx in SECRET_PATTERNS.items() if rx.search(text)
        ]
        if path.name in (".env", "id_rsa", "id_ed25519") or path.suffix in (".pem", ".key", ".p12"):
            found.append(f"{raw.decode()}: a credentials file")
    assert not found, found
    # The patterns do find what they are meant to.
    assert SECRET_PATTERNS["private key"].search(_BEGIN + " OPENSSH PRIVATE KEY-----")
    assert SECRET_PATTERNS["AWS access key"].search("key AKIA" + "ABCDEFGHIJKLMNOP")
    assert SECRET_PATTERNS["Django secret key"].search('SECRET_KEY = "' + "k" * 40 + '"')


def test_no_patient_identifier_in_the_logs(api, pathologist, caplog, settings) -> None:
    """Upload, duplicate upload (direct and chunked), refusals, review and sign-out: a handler on
    the root logger sees every record, and none carries the patient's identifier."""
    from tests.factories import PatientFactory

    identifier = "PAT-LOGCHECK-991"
    patient = PatientFactory.create(identifier=identifier)
    client = api(pathologist)
    caplog.set_level(logging.DEBUG)
    first = client.post(
        "/api/slides/",
        {"patient": patient.pk, "file": upload(f"{identifier}.png", seed=9)},
        format="multipart",
    )
    assert first.status_code == 201
    again = client.post(
        "/api/slides/",
        {"patient": patient.pk, "file": upload(f"{identifier}.png", seed=9)},
        format="multipart",
    )
    assert again.status_code == 409 and identifier in again.json()["detail"]  # told the user
    bad = client.post(
        "/api/slides/",
        {"patient": patient.pk, "file": upload(f"{identifier}.png", b"junk")},
        format="multipart",
    )
    assert bad.status_code == 400
    from tests.factories import image_bytes

    data = image_bytes(seed=9)
    created = client.post(
        "/api/uploads/", {"patient": patient.pk, "filename": f"{identifier}.png", "size": len(data)}
    )
    assert created.status_code == 201, created.content
    chunk = client.generic(
        "PATCH",
        created["Location"],
        data,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET="0",
    )
    assert chunk.status_code == 409, chunk.content  # duplicate: refused, message kept
    slide_id = first.json()["id"]
    client.get(f"/api/patients/?search={identifier}")
    client.get(f"/api/slides/{slide_id}/")
    client.get(f"/api/patients/{patient.pk}/")
    assert caplog.records, "the handler saw the requests' log records"
    for record in caplog.records:
        assert identifier not in record.getMessage(), (record.name, record.getMessage())
