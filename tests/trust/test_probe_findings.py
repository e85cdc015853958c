"""Regression tests for the findings of the adversarial probe (issue 13), one per row: each fails
on the behaviour the probe found."""

from __future__ import annotations

import os

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_anonymous_healthz_says_up_or_down_only(client: Client, pathologist) -> None:
    """Row 9: no broker host, port or database vendor for strangers; details for staff only."""
    body = client.get("/healthz").json()
    assert body == {"status": "ok"}
    client.force_login(pathologist)  # signed in but not staff: still nothing internal
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "javascript:alert(1)",
    ],
)
def test_no_redirect_off_site_after_activation(client: Client, admin_user, target: str) -> None:
    """Row 7: `next` after a Models-page form goes to a path on this site, never elsewhere."""
    client.force_login(admin_user)
    response = client.post("/models/rollback/", {"stage": "classifier", "next": target})
    assert response.status_code == 302
    assert response["Location"] == "/models/"


def test_a_local_next_is_kept(client: Client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.post(
        "/models/rollback/", {"stage": "classifier", "next": "/models/?export=3"}
    )
    assert response["Location"] == "/models/?export=3"


def test_direct_slide_upload_obeys_the_one_upload_limit(api, pathologist, settings) -> None:
    """Row 5: `POST /api/slides/` above UPLOAD_MAX_BYTES is 413, as the resumable path is, and
    nothing is stored."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from papreview.cases.models import Slide
    from testkit.images import field_bytes
    from tests.factories import PatientFactory

    settings.UPLOAD_MAX_BYTES = 1_000
    patient = PatientFactory.create()
    big = SimpleUploadedFile("big.png", field_bytes(400, 300, seed=1), "image/png")
    assert big.size > settings.UPLOAD_MAX_BYTES
    response = api(pathologist).post(
        "/api/slides/", {"patient": patient.pk, "file": big}, format="multipart"
    )
    assert response.status_code == 413, response.content
    body = response.json()
    assert body["code"] == "upload_too_large" and "above the upload limit" in body["detail"]
    assert not Slide.objects.exists()


@pytest.mark.parametrize("text", ["a\x00b", "\x00", "\ud800", "\U0001d54f\u202e\ufeff"])
def test_odd_text_in_export_filters_is_a_400_naming_the_field(api, pathologist, text) -> None:
    """Row 6: a NUL byte (PostgreSQL refuses it in text) or odd Unicode in a filter is a 400
    that names the field, never a 500."""
    import json

    body = json.dumps({"name": "odd", "filters": {"patients": [text]}})  # \\u escapes
    response = api(pathologist).generic(
        "POST", "/api/exports/", body, content_type="application/json"
    )
    assert response.status_code in (201, 202, 400), response.content
    if "\x00" in text or "\ud800" in text:
        assert response.status_code == 400
        assert "patients" in response.content.decode()


def test_weak_passwords_are_refused_everywhere(capsys, monkeypatch) -> None:
    """Row 10: the password validators apply to `user_create` (and so to every caller); the demo
    users get random passwords, shown once."""
    from django.contrib.auth.models import User
    from django.core.exceptions import ValidationError
    from django.core.management import CommandError, call_command

    from papreview.accounts.roles import Role
    from papreview.accounts.services import user_create

    for weak in ("1234", "password123", "weakweak"):
        with pytest.raises(ValidationError) as refused:
            user_create(username="weak", password=weak, role=Role.VIEWER)
        assert "password" in refused.value.message_dict
    assert not User.objects.filter(username="weak").exists()

    monkeypatch.setenv("PAPREVIEW_ADMIN_PASSWORD", "1234")
    with pytest.raises(CommandError, match=r"too short|too common|entirely numeric"):
        call_command("demo_data", "--slides", "0")
    monkeypatch.delenv("PAPREVIEW_ADMIN_PASSWORD")
    call_command("demo_data", "--slides", "0")
    first = capsys.readouterr().out
    assert "change-me" not in first
    viewer_line = next(line for line in first.splitlines() if "username: viewer" in line)
    password = viewer_line.split("password:")[1].strip()
    assert len(password) >= 16 and User.objects.get(username="viewer").check_password(password)
    call_command("demo_data", "--slides", "0")
    assert password not in capsys.readouterr().out  # shown once


def _token_client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    response = client.post(
        "/api/auth/token/", {"username": user.username, "password": "a-long-passphrase-42"}
    )
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    return client, response.json()["token"]


@pytest.fixture
def reviewer():
    from papreview.accounts.roles import Role
    from papreview.accounts.services import user_create

    return user_create(username="tok", password="a-long-passphrase-42", role=Role.PATHOLOGIST)


def test_api_tokens_expire_and_rotate(reviewer, settings) -> None:
    """Row 1: a token older than API_TOKEN_TTL_S is refused (401) and a new one is issued."""
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    client, key = _token_client(reviewer)
    assert client.get("/api/patients/").status_code == 200
    Token.objects.filter(key=key).update(created=timezone.now() - timedelta(hours=13))
    refused = client.get("/api/patients/")
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    _, fresh = _token_client(reviewer)
    assert fresh != key


@pytest.mark.parametrize("change", ["password", "deactivate", "no_role", "one_role_less"])
def test_api_tokens_are_revoked_when_the_account_changes(reviewer, change) -> None:
    """Row 1: a password change, a deactivation or a role taken away ends the API tokens."""
    from papreview.accounts.roles import Role
    from papreview.accounts.services import user_set_roles

    if change == "one_role_less":
        user_set_roles(user=reviewer, roles=[Role.PATHOLOGIST, Role.ADMIN])
    client, _ = _token_client(reviewer)
    assert client.get("/api/patients/").status_code == 200
    if change == "password":
        reviewer.set_password("another-long-passphrase-7")
        reviewer.save()
    elif change == "deactivate":
        reviewer.is_active = False
        reviewer.save()
    elif change == "no_role":
        user_set_roles(user=reviewer, roles=[])
    else:
        user_set_roles(user=reviewer, roles=[Role.PATHOLOGIST])
    assert client.get("/api/patients/").status_code == 401


def test_an_account_without_a_role_sees_no_patient_data(client: Client) -> None:
    """Row 1: no role = no patients, slides or cells, in the API and on the pages; it may still
    ask who it is and sign out."""
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    from papreview.accounts.middleware import OPEN_TO_NO_ROLE
    from tests.factories import PatientFactory, SlideFactory
    from tests.test_login_required import ENDPOINTS

    SlideFactory.create(patient=PatientFactory.create(identifier="SECRET-1"))
    nobody = User.objects.create_user("nobody", password="a-long-passphrase-42")
    api = APIClient()
    api.force_authenticate(nobody)
    refused = api.get("/api/patients/")
    assert refused.status_code == 403 and refused.json()["code"] == "no_role"
    assert api.get("/api/auth/me/").json()["roles"] == []
    client.force_login(nobody)
    page = client.get("/")
    assert page.status_code == 403 and "no role yet" in page.content.decode()
    assert "SECRET-1" not in page.content.decode()
    opened = []
    for endpoint in ENDPOINTS:
        if endpoint.path.startswith("/admin/") or endpoint.name in OPEN_TO_NO_ROLE:
            continue
        response = client.get(endpoint.path)
        if response.status_code not in (401, 403, 404, 405):
            opened.append((endpoint.name, response.status_code))
    assert not opened, opened
    assert client.post("/accounts/logout/").status_code in (200, 302)


def test_security_headers_and_no_inline_script(client: Client, pathologist) -> None:
    """Row 8: a CSP without inline script and a Permissions-Policy on pages; patient data from
    the API is never stored by a cache; no page carries an inline script or handler."""
    import re

    from tests.factories import PatientFactory, SlideFactory

    slide = SlideFactory.create(patient=PatientFactory.create())
    client.force_login(pathologist)
    for path in ("/", f"/slides/{slide.pk}/", f"/slides/{slide.pk}/report/", "/upload/",
                 "/datasets/", "/models/", "/api/docs/"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 200, path
        csp = response["Content-Security-Policy"]
        assert (
            "script-src 'self'" in csp
            and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        )
        assert "camera=()" in response["Permissions-Policy"]
        html = response.content.decode()
        inline = [
            s
            for s in re.findall(r"<script\b[^>]*>", html)
            if "src=" not in s and "application/json" not in s
        ]
        assert not inline, (path, inline)
        assert not re.search(r"\son[a-z]+=\"", html), path
    api = client.get("/api/patients/")
    assert api["Cache-Control"] == "no-store"


def test_tiles_are_cached_briefly_and_cleared_on_logout(
    client: Client, pathologist, stored_slide
) -> None:
    """Row 8: tiles are private and short-lived in the browser's cache, and logging out clears
    that cache."""
    slide = stored_slide(cells=0)
    client.force_login(pathologist)
    tile = client.get(f"/api/slides/{slide.pk}/deepzoom_files/0/0_0.jpeg")  # the 1-px level
    assert tile.status_code == 200, tile.status_code
    cache = tile["Cache-Control"]
    assert "private" in cache and "max-age=3600" in cache
    logout = client.post("/accounts/logout/")
    assert logout["Clear-Site-Data"] == '"cache"'


def test_a_running_analysis_beats_while_the_models_work(transactional_db, settings) -> None:
    """Row 12: the heartbeat goes on during a long step that writes no progress, so only a dead
    worker's run goes stale, and stale means 2 minutes, not 15."""
    import time

    from papreview.analysis.models import AnalysisRun, RunStatus
    from papreview.analysis.services.run import run_heartbeat
    from tests.factories import SlideFactory

    assert settings.ANALYSIS_STALE_AFTER_S <= 120 < 4 * settings.ANALYSIS_HEARTBEAT_INTERVAL_S + 1
    run = AnalysisRun.objects.create(slide=SlideFactory.create(), status=RunStatus.RUNNING)
    assert run.heartbeat_at is None
    with run_heartbeat(run_id=run.pk, interval_s=0.05):
        time.sleep(0.3)  # a long batch: no progress written
        run.refresh_from_db()
        first = run.heartbeat_at
        assert first is not None
        time.sleep(0.2)
        run.refresh_from_db()
        assert run.heartbeat_at > first
    run.refresh_from_db()
    stopped = run.heartbeat_at
    time.sleep(0.2)
    run.refresh_from_db()
    assert run.heartbeat_at == stopped  # the beat ends with the run


def test_refusals_are_phrased_for_a_person_with_the_field_named(api, pathologist) -> None:
    """Row 13: DRF's stock phrases become sentences a person reads, naming the field; the
    per-field detail stays for programs."""
    from tests.factories import PatientFactory

    patient = PatientFactory.create()
    response = api(pathologist).post(
        "/api/uploads/", {"patient": patient.pk, "filename": "a.png", "size": 0}, format="json"
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert "Ensure this value" not in body["detail"]
    assert "size" in body["detail"] and "size" in body["fields"]
    missing = api(pathologist).post("/api/patients/", {}, format="json").json()
    assert "This field is required" not in missing["detail"]
    assert "identifier is missing." in missing["detail"]


def test_reads_of_patient_data_are_audited_once_a_minute_and_polls_not_at_all(
    api, pathologist, stored_slide
) -> None:
    """Row 4: reads of patient data leave a trace (who, what, which slide or patient, from
    where), once per user, kind and target a minute; the pages' polling leaves none; creating a
    patient and assigning a slide are audited."""
    from papreview.audit.models import AuditAction, AuditEvent
    from papreview.review.models import Cell

    slide = stored_slide(cells=3)
    cell = Cell.objects.filter(slide=slide).first()
    assert cell is not None
    client = api(pathologist)
    reads = [
        ("/api/patients/", "patient_list"),
        (f"/api/patients/{slide.patient_id}/", "patient"),
        ("/api/slides/", "slide_list"),
        (f"/api/slides/{slide.pk}/", "slide"),
        (f"/api/slides/{slide.pk}/cell-layer/", "cells"),
        (f"/api/slides/{slide.pk}/interpretation/", "interpretation"),
        (f"/api/cells/{cell.pk}/crop/", "cell_crops"),
        (f"/api/slides/{slide.pk}/deepzoom_files/0/0_0.jpeg", "slide_tiles"),
    ]
    for url, _ in reads:
        for _ in range(3):  # three reads in the same minute: one event
            assert client.get(url).status_code == 200, url
    events = AuditEvent.objects.filter(action=AuditAction.PATIENT_DATA_READ, actor=pathologist)
    assert sorted(e.data["what"] for e in events) == sorted(what for _, what in reads)
    by_what = {e.data["what"]: e for e in events}
    assert by_what["cells"].slide_id == slide.pk and by_what["cells"].patient_id == slide.patient_id
    assert by_what["patient"].patient_id == slide.patient_id
    assert all(e.address for e in events)  # from where

    before = AuditEvent.objects.count()
    for _ in range(5):  # the queue's progress poll and the review page's look for changes
        client.get(f"/api/slides/{slide.pk}/", HTTP_X_PAPREVIEW_POLL="1")
        client.get(f"/api/slides/{slide.pk}/cell-layer/?since=2026-01-01T00:00:00Z",
                   HTTP_X_PAPREVIEW_POLL="1")  # fmt: skip
    assert AuditEvent.objects.count() == before

    created = client.post("/api/patients/", {"identifier": "AUD-1"}, format="json")
    assert created.status_code == 201, created.content
    assert AuditEvent.objects.filter(
        action=AuditAction.PATIENT_CREATED, actor=pathologist, patient_id=created.json()["id"]
    ).exists()
    assigned = client.post(f"/api/slides/{slide.pk}/assign/", {"reviewer": pathologist.pk})
    assert assigned.status_code == 200, assigned.content
    event = AuditEvent.objects.get(action=AuditAction.SLIDE_ASSIGNED, slide_id=slide.pk)
    assert event.actor == pathologist and event.data["to"] == pathologist.pk


def test_lockout_is_by_username_and_refusals_are_audited(api, settings) -> None:
    """Row 2: one username guessed from many addresses is locked; a refused login, locked or
    slowed, is an audit event with the username, the address and why."""
    from papreview.accounts.roles import Role
    from papreview.accounts.services import user_create
    from papreview.audit.models import AuditAction, AuditEvent

    settings.LOGIN_LOCKOUT_USERNAME_FAILURES = 6
    user = user_create(username="spread", password="a-long-passphrase-42", role=Role.VIEWER)
    client = api(None)

    def token(password: str, addr: str):
        return client.post(
            "/api/auth/token/",
            {"username": user.username, "password": password},
            REMOTE_ADDR=addr,
        )

    for i in range(6):  # one failure from each of six addresses: no address-user pair hits 5
        assert token("bad", f"10.9.0.{i}").status_code == 400
    refused = token("a-long-passphrase-42", "10.9.0.99")
    assert refused.status_code == 429 and "locked for 15 more minutes" in refused.json()["detail"]
    event = AuditEvent.objects.get(action=AuditAction.LOGIN_LOCKED)
    assert event.actor_username == "spread" and event.address == "10.9.0.99"
    assert event.data == {"username": "spread", "why": "locked"}


@pytest.mark.django_db(transaction=True)
def test_the_runtime_database_role_only_inserts_into_the_audit_table(settings) -> None:
    """Row 4: the role the app runs as may read and write the app's tables but only INSERT into
    the audit table: UPDATE, DELETE and TRUNCATE are refused by PostgreSQL itself."""
    import uuid

    import psycopg
    from django.core.management import call_command
    from django.db import connection

    from papreview.audit.models import AuditAction, AuditEvent

    AuditEvent.objects.create(action=AuditAction.LOGIN, actor_username="someone")
    before = AuditEvent.objects.count()
    role = f"papreview_app_{uuid.uuid4().hex[:8]}"
    os.environ["TEST_APP_DB_PASSWORD"] = "a-long-runtime-password"
    call_command("db_runtime_role", "--role", role, "--password-env", "TEST_APP_DB_PASSWORD")
    params = connection.get_connection_params()
    conninfo = {k: params[k] for k in ("host", "port", "dbname") if params.get(k)}
    try:
        with psycopg.connect(**conninfo, user=role, password="a-long-runtime-password",
                             autocommit=True) as app:  # fmt: skip
            app.execute(
                "INSERT INTO audit_auditevent (at, action, actor_username, address, target_type,"
                " target_id, data) VALUES (now(), 'login', 'app', NULL, '', '', '{}')"
            )
            assert app.execute("SELECT count(*) FROM cases_patient").fetchone() is not None
            for statement in (
                "UPDATE audit_auditevent SET actor_username = 'forged'",
                "DELETE FROM audit_auditevent",
                "TRUNCATE audit_auditevent",
                "DROP TRIGGER audit_event_append_only ON audit_auditevent",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute(statement)
        assert AuditEvent.objects.count() == before + 1  # its insert, nothing lost
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP OWNED BY "{role}"')
            cursor.execute(f'DROP ROLE "{role}"')


def test_a_broken_tiff_is_refused_in_words_for_a_person(tmp_path) -> None:
    """Row 13: "list index out of range" came from the TIFF reader through the refusal's text; the
    refusal names the file and what is wrong, the reader's words stay in the chained exception."""
    from inference.errors import UnreadableSlideError
    from inference.slides import probe_slide

    broken = tmp_path / "scan.tif"
    broken.write_bytes(b"II*\x00\xff\xff\xff\x00")  # its first directory is past the end
    with pytest.raises(UnreadableSlideError) as refused:
        probe_slide(broken, max_pixels=10**9)
    message = str(refused.value)
    assert message.startswith("scan.tif: not a readable TIFF image")
    assert "index" not in message and "Error" not in message
    assert isinstance(refused.value.__cause__, IndexError)  # what the probe was shown
