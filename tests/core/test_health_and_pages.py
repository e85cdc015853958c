"""/healthz, the HTML pages, the admin (admin role only) and the OpenAPI schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from papreview.cases.models import SlideStatus
from tests.factories import SlideFactory

pytestmark = pytest.mark.django_db


def test_healthz_is_200_when_database_and_broker_answer(client, admin_user) -> None:
    client.force_login(admin_user)  # staff see the details
    response = client.get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["database"]["detail"] == "postgresql"
    assert body["broker"]["ok"]


def test_healthz_is_503_when_the_broker_is_down(client, settings, admin_user) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    client.force_login(admin_user)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is False and body["broker"]["error"]
    assert body["broker"]["ms"] < 5000


def test_healthz_reports_a_missing_filesystem_broker_folder(client, settings, tmp_path) -> None:
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(tmp_path / "missing"),
        "data_folder_out": str(tmp_path / "missing"),
    }
    assert client.get("/healthz").status_code == 503
    (tmp_path / "missing").mkdir()
    assert client.get("/healthz").status_code == 200


def test_login_page_logs_in_and_home_shows_the_queue(client, pathologist) -> None:
    SlideFactory.create(
        status=SlideStatus.ANALYSED, original_filename="suspicious.png", triage_score=4.8
    )
    assert client.get("/").status_code == 302
    response = client.post(
        reverse("login"), {"username": pathologist.username, "password": "secret-pass-123"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("home")
    home = client.get("/")
    assert home.status_code == 200
    assert b"suspicious.png" in home.content and b"pathologist" in home.content
    logout = client.post(reverse("logout"))
    assert logout.status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_password_shows_a_message(client, pathologist) -> None:
    response = client.post(reverse("login"), {"username": pathologist.username, "password": "no"})
    assert response.status_code == 200
    assert b"did not match" in response.content


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/users/",  # users and roles: the users page (the Django admin's are for superusers)
        "/admin/cases/patient/",
        "/admin/cases/slide/",
        "/admin/analysis/modelversion/",
    ],
)
def test_admin_role_manages_users_patients_slides_and_models(client, admin_user, url) -> None:
    SlideFactory.create()
    client.force_login(admin_user)
    assert client.get(url).status_code == 200


def test_other_roles_cannot_enter_the_admin(client, pathologist, user_with_role) -> None:
    from papreview.accounts.roles import Role

    for user in (pathologist, user_with_role(Role.VIEWER)):
        user.is_staff = True  # even a staff flag set by mistake does not open the admin
        user.save()
        client.force_login(user)
        response = client.get("/admin/cases/patient/")
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_schema_generates_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for path in ("/api/slides/{slide_id}/sign-out/", "/api/cells/{cell_id}/", "/api/auth/token/"):
        assert path in text


def test_schema_and_docs_need_login(client, viewer) -> None:
    assert client.get("/api/schema/").status_code in (401, 403)
    client.force_login(viewer)
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


def test_api_docs_load_nothing_from_a_cdn(client, viewer) -> None:
    client.force_login(viewer)
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui-bundle.js" in page
    assert "//cdn." not in page and "jsdelivr" not in page and "unpkg" not in page


def test_healthz_is_503_when_the_database_is_down(client, monkeypatch) -> None:
    from django.db import OperationalError, connections

    def refuse(*args: object, **kwargs: object) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(connections["default"], "cursor", refuse)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}  # the details are for staff only


def test_schema_promises_body_refusals_only_where_a_body_is_sent(tmp_path: Path) -> None:
    """413 and 415 are about a request body: a DELETE sends none, so it is not promised them;
    409 (a conflict) stays with every change."""
    import yaml

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(out))
    paths = yaml.safe_load(out.read_text())["paths"]
    deletes = [ops["delete"]["responses"] for ops in paths.values() if "delete" in ops]
    posts = [ops["post"]["responses"] for ops in paths.values() if "post" in ops]
    assert deletes and posts
    assert all("409" in r and "413" not in r and "415" not in r for r in deletes)
    assert all({"409", "413", "415"} <= set(r) for r in posts)
