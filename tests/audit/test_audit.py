"""The audit trail: every kind of event is recorded with who, when, what and from where; the
table is append-only in the database; the admin page filters and exports CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection, transaction

from papreview.accounts.roles import Role
from papreview.accounts.services import user_create, user_set_roles
from papreview.analysis.models import ModelStage
from papreview.audit.models import AuditAction, AuditEvent
from papreview.cases.models import Slide, SlideStatus
from papreview.datasets.models import DatasetExport, ExportStatus
from papreview.datasets.services import dataset_export_create
from papreview.workflow.services import slide_sign_out
from tests.factories import CellFactory, ModelVersionFactory, PatientFactory, SlideFactory, upload

pytestmark = pytest.mark.django_db

PASSWORD = "secret-pass-123"  # tests.factories.UserFactory


def events(action: AuditAction, **filters: Any) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("id"))


def test_logins_failed_logins_and_logouts_from_the_login_page(client, pathologist) -> None:
    response = client.post(
        "/accounts/login/",
        {"username": pathologist.username, "password": "wrong"},
        REMOTE_ADDR="10.1.2.3",
    )
    assert response.status_code == 200
    (failed,) = events(AuditAction.LOGIN_FAILED)
    assert failed.actor is None and failed.actor_username == pathologist.username
    assert failed.address == "10.1.2.3" and "password" not in str(failed.data)

    response = client.post(
        "/accounts/login/",
        {"username": pathologist.username, "password": PASSWORD},
        REMOTE_ADDR="10.1.2.3",
    )
    assert response.status_code == 302
    (login,) = events(AuditAction.LOGIN)
    assert login.actor == pathologist and login.address == "10.1.2.3" and login.at

    client.post("/accounts/logout/", REMOTE_ADDR="10.1.2.3")
    (logout,) = events(AuditAction.LOGOUT)
    assert logout.actor == pathologist and logout.address == "10.1.2.3"


def test_token_logins_are_recorded(api, pathologist) -> None:
    client = api(None)
    bad = client.post("/api/auth/token/", {"username": pathologist.username, "password": "x"})
    assert bad.status_code == 400
    good = client.post("/api/auth/token/", {"username": pathologist.username, "password": PASSWORD})
    assert good.status_code == 200
    assert events(AuditAction.LOGIN_FAILED)[0].address == "127.0.0.1"
    (login,) = events(AuditAction.LOGIN)
    assert login.actor == pathologist and login.data == {"via": "token"}


def test_forwarded_for_counts_only_behind_a_trusted_proxy(client, settings, viewer) -> None:
    creds = {"username": viewer.username, "password": "wrong"}
    client.post("/accounts/login/", creds, REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="1.2.3.4")
    settings.AUDIT_TRUSTED_PROXIES = ["10.0.0.9"]
    client.post(
        "/accounts/login/", creds, REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="1.2.3.4, 10.0.0.8"
    )
    first, second = events(AuditAction.LOGIN_FAILED)
    assert first.address == "10.0.0.9"  # a client may write anything into the header
    assert second.address == "1.2.3.4"  # our proxy's word is taken


def test_review_work_is_recorded_with_ids_not_identifiers(api, client, pathologist) -> None:
    patient = PatientFactory.create(identifier="PAT-SECRET-77")
    rest = api(pathologist)
    response = rest.post(
        "/api/slides/", {"patient": patient.pk, "file": upload(seed=5)}, format="multipart"
    )
    assert response.status_code == 201, response.content
    slide = Slide.objects.get(pk=response.json()["id"])
    (up,) = events(AuditAction.UPLOAD)
    assert (up.actor, up.slide_id, up.patient_id) == (pathologist, slide.pk, patient.pk)
    assert up.data["sha256"] == slide.sha256 and up.address == "127.0.0.1"

    Slide.objects.filter(pk=slide.pk).update(status=SlideStatus.ANALYSED)
    cell = CellFactory.create(slide=slide, x=1, y=1, width=10, height=10)
    assert rest.get(f"/api/slides/{slide.pk}/").status_code == 200
    assert rest.get(f"/api/slides/{slide.pk}/").status_code == 200  # one read event a minute
    (read,) = events(AuditAction.PATIENT_DATA_READ)
    assert read.data == {"what": "slide"}
    client.force_login(pathologist)
    assert client.get(f"/slides/{slide.pk}/").status_code == 200
    opened = events(AuditAction.SLIDE_OPENED)
    assert [e.data["via"] for e in opened] == ["review_page"]
    assert {(e.slide_id, e.patient_id, e.actor_id) for e in [*opened, read]} == {
        (slide.pk, patient.pk, pathologist.pk)
    }

    changed = rest.patch(f"/api/cells/{cell.pk}/", {"version": 1, "current_class": "LSIL"})
    assert changed.status_code == 200, changed.content
    added = rest.post(
        f"/api/slides/{slide.pk}/cells/",
        {"x": 5, "y": 5, "width": 8, "height": 8, "current_class": "NILM"},
    )
    assert added.status_code == 201
    (change,) = events(AuditAction.CELL_CHANGED)
    assert change.target_type == "review.cell" and change.target_id == str(cell.pk)
    assert change.data["before"]["current_class"] == "HSIL"
    assert change.data["after"]["current_class"] == "LSIL" and change.data["after"]["version"] == 2
    assert events(AuditAction.CELL_ADDED)[0].target_id == str(added.json()["id"])

    signed = rest.post(f"/api/slides/{slide.pk}/sign-out/", {"bethesda_category": "LSIL"})
    assert signed.status_code == 200, signed.content
    assert events(AuditAction.SIGN_OUT)[0].data["bethesda_category"] == "LSIL"
    reopened = rest.post(f"/api/slides/{slide.pk}/reopen/", {"reason": "second opinion"})
    assert reopened.status_code == 200, reopened.content
    (reopen,) = events(AuditAction.REOPEN)
    assert reopen.actor == pathologist and reopen.slide_id == slide.pk

    # Ids, never the patient's identifier, anywhere in the trail.
    for event in AuditEvent.objects.all():
        assert "PAT-SECRET-77" not in f"{event.data} {event.target_id} {event.actor_username}"


def test_exports_and_model_activation_are_recorded(api, admin_user, pathologist) -> None:
    slide = SlideFactory.create(status=SlideStatus.ANALYSED)
    slide_sign_out(slide=slide, by=pathologist, bethesda_category="NILM")
    export = dataset_export_create(
        name="audit", created_by=pathologist, params={"train_only": True}
    )
    (created,) = events(AuditAction.EXPORT_CREATED)
    assert created.actor == pathologist and created.target_id == str(export.pk)
    assert created.data["slide_count"] == 1 and slide.pk

    name = default_storage.save("exports/audit.zip", ContentFile(b"PK\x05\x06" + b"\0" * 18))
    DatasetExport.objects.filter(pk=export.pk).update(
        status=ExportStatus.READY, file=name, sha256="0" * 64
    )
    download = api(pathologist).get(f"/api/exports/{export.pk}/download/")
    assert download.status_code == 200
    (downloaded,) = events(AuditAction.EXPORT_DOWNLOADED)
    assert downloaded.actor == pathologist and downloaded.target_id == str(export.pk)

    mv = ModelVersionFactory.create(stage=ModelStage.DETECTOR)
    assert api(pathologist).post(f"/api/model-versions/{mv.pk}/activate/").status_code == 403
    assert api(admin_user).post(f"/api/model-versions/{mv.pk}/activate/").status_code == 200
    (activated,) = events(AuditAction.MODEL_ACTIVATED)
    assert activated.actor == admin_user and activated.data["name"] == mv.name


def test_user_and_role_changes_are_recorded(client, admin_user) -> None:
    client.force_login(admin_user)  # changes made in the admin carry the admin as actor
    user = user_create(username="newbie", password="a-long-passphrase-42", role=Role.VIEWER)
    (created,) = events(AuditAction.USER_CREATED, target_id=str(user.pk))
    assert created.data["username"] == "newbie"
    (granted,) = events(AuditAction.ROLES_CHANGED, target_id=str(user.pk))
    assert granted.data["added"] == ["viewer"]

    user_set_roles(user=user, roles=[Role.PATHOLOGIST])
    role_events = events(AuditAction.ROLES_CHANGED, target_id=str(user.pk))
    assert [e.data.get("added") or e.data.get("removed") for e in role_events[1:]] == [
        ["viewer"],
        ["pathologist"],
    ]
    Group.objects.get(name="viewer").user_set.add(user)  # from the group's side
    assert events(AuditAction.ROLES_CHANGED, target_id=str(user.pk))[-1].data["added"] == ["viewer"]

    user.set_password("another-long-passphrase-43")
    user.is_active = False
    user.save()
    (changed,) = events(AuditAction.USER_CHANGED, target_id=str(user.pk))
    assert changed.data["changes"] == {"is_active": [True, False]}
    assert changed.data["password_changed"] is True and "pbkdf2" not in str(changed.data)
    assert "md5" not in str(changed.data)

    # Through the admin pages: the actor is the admin who did it, with the address. (Users in
    # the Django admin are for superusers; lab admins use the users page, issue 18.)
    admin_user.is_superuser = True
    admin_user.save(update_fields=["is_superuser"])
    response = client.post(
        f"/admin/auth/user/{user.pk}/change/",
        {
            "username": "newbie",
            "is_active": "on",
            "groups": [Group.objects.get(name="cytotechnologist").pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "10:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "10:00:00",
        },
        REMOTE_ADDR="10.9.9.9",
    )
    assert response.status_code == 302, response.content[:2000]
    admin_events = AuditEvent.objects.filter(target_id=str(user.pk), actor=admin_user)
    assert {e.action for e in admin_events} >= {AuditAction.USER_CHANGED, AuditAction.ROLES_CHANGED}
    assert {e.address for e in admin_events} == {"10.9.9.9"}

    user_id = user.pk
    user.delete()
    (deleted,) = events(AuditAction.USER_DELETED)
    assert deleted.data == {"user_id": user_id, "username": "newbie"}
    assert AuditEvent.objects.filter(target_id=str(user_id)).count() >= 6  # history kept


def test_the_table_is_append_only_in_the_database(pathologist) -> None:
    event = AuditEvent.objects.create(action=AuditAction.LOGIN, actor=pathologist)
    table = AuditEvent._meta.db_table
    for sql in (
        f"UPDATE {table} SET action = 'logout' WHERE id = %s",
        f"DELETE FROM {table} WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [event.pk])
    # ...and no code path either.
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(pk=event.pk).update(action="logout")
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(TypeError):
        event.save()
    with pytest.raises(TypeError):
        event.delete()
    assert AuditEvent.objects.get(pk=event.pk).action == AuditAction.LOGIN
    # Deleting the user leaves its events alone (no constraint, no cascade).
    pathologist.delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_admin_page_filters_and_exports_csv(client, admin_user, pathologist) -> None:
    client.post("/accounts/login/", {"username": "ghost", "password": "=cmd|' /C calc'!A0"})
    client.post("/accounts/login/", {"username": "=HYPERLINK(1)", "password": "x"})
    client.force_login(admin_user)
    page = client.get("/admin/audit/auditevent/", {"action__exact": "login_failed"})
    assert page.status_code == 200
    assert b"ghost" in page.content and b"Export as CSV" in page.content
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    one = AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED).first()
    assert one is not None
    assert client.post(f"/admin/audit/auditevent/{one.pk}/delete/").status_code == 403
    detail = client.post(f"/admin/audit/auditevent/{one.pk}/change/", {"action": "login"})
    assert detail.status_code == 403
    assert AuditEvent.objects.get(pk=one.pk).action == AuditAction.LOGIN_FAILED

    export = client.get("/admin/audit/auditevent/export.csv", {"action__exact": "login_failed"})
    assert export.status_code == 200 and export["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert {r["action"] for r in rows} == {"login_failed"}
    assert {r["actor_username"] for r in rows} == {"ghost", "'=HYPERLINK(1)"}  # no formulas
    assert all(r["address"] == "127.0.0.1" for r in rows)

    client.force_login(pathologist)
    assert client.get("/admin/audit/auditevent/").status_code == 302  # to the admin login
    refused = client.get("/admin/audit/auditevent/export.csv")
    assert refused.status_code == 302 and "login" in refused["Location"]


def test_audit_rows_never_hold_a_user_password(client, pathologist) -> None:
    client.post("/accounts/login/", {"username": pathologist.username, "password": PASSWORD})
    user = User.objects.get(pk=pathologist.pk)
    for event in AuditEvent.objects.all():
        assert PASSWORD not in str(event.data) and user.password not in str(event.data)
