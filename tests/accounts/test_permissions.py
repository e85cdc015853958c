"""Every URL x every role x every method, checked against one rule table.

The URL walk is the one of tests.test_login_required.py, so a new URL appears here by
itself; a URL with no rule in RULES fails `test_every_url_has_a_rule` until someone decides who
may use it. Each URL is called with real objects (a slide, a cell, an export, ...), so object-
level checks answer as they would in use.

Answers: "allowed" is anything but a refusal (2xx, 3xx other than to a login page, 400, 404,
409: the request got past the permission checks); "denied" is 401/403 or a redirect to a login
page. For a listed method, the listed roles must be allowed and the others denied; a method not
listed must be refused to everyone (denied, or 405 Method Not Allowed).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import resolve, reverse

from inference.types import BETHESDA_CLASSES
from papreview.accounts.roles import Role
from papreview.analysis.models import ModelStage
from papreview.cases.models import SlideStatus
from papreview.datasets.models import DatasetExport, ExportStatus, QCReview
from papreview.uploads.models import Upload
from papreview.workflow.services import slide_sign_out
from tests.factories import (
    CellFactory,
    ModelVersionFactory,
    PatientFactory,
    SlideFactory,
    UserFactory,
    image_bytes,
)
from tests.test_login_required import ENDPOINTS, Endpoint

pytestmark = pytest.mark.django_db

A, P, C, V = Role.ADMIN, Role.PATHOLOGIST, Role.CYTOTECHNOLOGIST, Role.VIEWER
ALL = frozenset({A, P, C, V})
WRITERS = frozenset({A, P, C})
ADMIN = frozenset({A})
PATHOLOGISTS = frozenset({A, P})
NOBODY: frozenset[Role] = frozenset()
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ADMIN_METHODS = ("GET", "POST")  # the admin site: any role but admin is sent to its login

READ = {"GET": ALL}
READ_WRITE = {"GET": ALL, "POST": WRITERS}
ADMIN_ONLY = {"GET": ADMIN, "POST": ADMIN}

# Who may use each URL, per method.
RULES: dict[str, dict[str, frozenset[Role]]] = {
    # Pages
    "home": READ,
    "slide-report-page": READ,
    "upload": READ,  # the page; uploading is the API (viewers are refused there)
    "slide-review": READ,
    # A logged-in user is sent home whatever the method (redirect_authenticated_user).
    "login": dict.fromkeys(METHODS, ALL),
    "logout": {"POST": ALL},
    "healthz": READ,
    "export-list-page": READ_WRITE,  # POST: request an export
    "export-download-page": READ,
    "model-registry": READ,
    "model-activate": {"POST": ADMIN},
    "model-rollback": {"POST": ADMIN},  # back to the previously active version
    "model-evaluate": {"POST": ADMIN},
    "model-retrain": {"POST": ADMIN},  # queue a retraining (training queue)
    "model-dashboard": {"GET": ALL, "POST": ADMIN},  # POST: QC settings and sampling
    "qc-review": READ_WRITE,  # by anyone but the slide's first reviewer
    # API
    "api-me": READ,
    "api-token": {"POST": ALL},
    "api-schema": READ,
    "api-docs": READ,
    "patient-list": READ_WRITE,
    "patient-detail": READ,
    "slide-list": READ_WRITE,  # POST: upload
    "slide-detail": READ,
    "slide-cells": READ_WRITE,  # POST: add a cell
    "slide-sign-out": {"POST": WRITERS},  # by category: see test_sign_out_by_category
    "slide-reopen": {"POST": PATHOLOGISTS},  # with a reason; pathologists and admins only
    "slide-interpretation": {"GET": ALL, "PUT": WRITERS},
    "slide-assign": {"POST": WRITERS},
    "slide-refer": {"POST": WRITERS},
    "slide-cell-sightings": {"POST": WRITERS},
    "slide-cells-clear": {"POST": WRITERS},
    "slide-report": READ,
    "slide-analyze": {"POST": WRITERS},
    "slide-runs": READ,
    "slide-set-aside": READ,
    "slide-cell-layer": READ,
    "slide-deepzoom": READ,
    "slide-deepzoom-tile": READ,
    "cell-detail": {"GET": ALL, "PATCH": WRITERS},
    "cell-crop": READ,
    "cell-revisions": READ,
    "upload-list": {"POST": WRITERS},
    # An upload is seen, continued or cancelled only by the user who started it (here: the
    # admin); to anyone else it does not exist (404).
    "upload-detail": {"GET": ADMIN, "PATCH": ADMIN, "DELETE": ADMIN},
    "reviewer-list": READ,
    "export-list": READ_WRITE,
    "export-detail": READ,
    "export-download": READ,
    "model-version-list": READ,
    "model-version-activate": {"POST": ADMIN},
    "model-version-rollback": {"POST": ADMIN},
    "evaluation-list": {"GET": ALL, "POST": ADMIN},
    "retrain-job-list": {"GET": ALL, "POST": ADMIN},
    "model-dashboard-api": READ,
    # Accounts (issue 18). The code step sends a signed-in user home, like the login page.
    "login-code": dict.fromkeys(METHODS, ALL),
    "two-factor": {"GET": ALL, "POST": ALL},  # one's own two-factor
    # One-time links: open to anyone who has one (here a broken link: "no longer works").
    "account-invite": {"GET": ALL, "POST": ALL},
    "account-reset": {"GET": ALL, "POST": ALL},
    # Single sign-on: 404 while it is not set up (as here).
    "oidc_authentication_init": dict.fromkeys(METHODS, ALL),
    "oidc_authentication_callback": dict.fromkeys(METHODS, ALL),
    "users": ADMIN_ONLY,
    "user-detail": ADMIN_ONLY,
}
# The admin site: admins only, but for its login and logout pages.
# URLs whose objects belong to one user: to the others they answer 404 (a refusal).
HIDDEN_FROM_OTHERS = {"upload-detail"}
# Logging out sends the user to a login page: that is its success.
LOGOUTS = {"logout", "admin:logout"}
ADMIN_SITE_PUBLIC = {"admin:login": {"GET": ALL, "POST": ALL}, "admin:logout": {"POST": ALL}}
# Admin pages that refuse even admins: the audit trail is append-only; slides are uploaded,
# exports requested and runs queued through the app (their services check the files and
# permissions), not typed into an admin form.
ADMIN_SITE_READ_ONLY = {
    "admin:audit_auditevent_add": {},
    "admin:audit_auditevent_delete": {},
    "admin:audit_auditevent_change": {"GET": ADMIN},  # a view-only page
    "admin:cases_slide_add": {},
    "admin:datasets_datasetexport_add": {},
    "admin:analysis_analysisrun_add": {},
    # GET-only admin pages.
    "admin:jsi18n": {"GET": ADMIN},
    "admin:password_change_done": {"GET": ADMIN},
    # Needs term, app_label, model_name and field_name; without them: 403 for everyone.
    "admin:autocomplete": {},
    # Slide events are a history: viewed, never edited.
    "admin:workflow_slideevent_change": {"GET": ADMIN},
}


# Users, groups, API tokens and two-factor devices in the Django admin: superusers only (issue
# 18); the admin role manages users on the users page (a role is not a superuser).
SUPERUSER_ONLY_PREFIXES = ("admin:auth_", "admin:authtoken_", "admin:otp_")


def rule_for(endpoint: Endpoint) -> dict[str, frozenset[Role]] | None:
    if endpoint.name.startswith(SUPERUSER_ONLY_PREFIXES):
        return {"GET": NOBODY, "POST": NOBODY}
    if endpoint.name in ADMIN_SITE_PUBLIC:
        return ADMIN_SITE_PUBLIC[endpoint.name]
    if endpoint.name in ADMIN_SITE_READ_ONLY:
        return ADMIN_SITE_READ_ONLY[endpoint.name]
    if endpoint.name.startswith("admin:") or endpoint.path.startswith("/admin/"):
        return ADMIN_ONLY
    return RULES.get(endpoint.name)


def test_every_url_has_a_rule() -> None:
    missing = [f"{e.name} {e.path}" for e in ENDPOINTS if rule_for(e) is None]
    assert not missing, f"add these URLs to RULES in {__file__}: {missing}"
    stale = set(RULES) - {e.name for e in ENDPOINTS}
    assert not stale, f"RULES names URLs that no longer exist: {stale}"


@pytest.fixture
def world(settings: Any) -> dict[str, Any]:
    """One user per role and an object of every kind the URLs take."""
    users = {role: UserFactory.create(role=role) for role in Role}
    patient = PatientFactory.create()
    name = default_storage.save("slides/perm/field.png", ContentFile(image_bytes(64, 48)))
    slide = SlideFactory.create(patient=patient, file=name, width=64, height=48)
    cell = CellFactory.create(slide=slide, x=2, y=2, width=10, height=10)
    zip_name = default_storage.save("exports/perm.zip", ContentFile(b"PK\x05\x06" + bytes(18)))
    export = DatasetExport.objects.create(
        name="perm", status=ExportStatus.READY, sha256="0" * 64, file=zip_name, created_by=users[A]
    )
    first = UserFactory.create(role=Role.PATHOLOGIST)
    signed = SlideFactory.create(patient=patient)
    slide_sign_out(slide=signed, by=first, bethesda_category="NILM")
    qc = QCReview.objects.create(slide=signed, first_reviewer=first)
    upload = Upload.objects.create(patient=patient, filename="a.png", size=10, created_by=users[A])
    ids = {
        "slide_id": slide.pk,
        "cell_id": cell.pk,
        "patient_id": patient.pk,
        "export_id": export.pk,
        "version_id": ModelVersionFactory.create(stage=ModelStage.DETECTOR).pk,
        "upload_id": upload.pk,
        "qc_review_id": qc.pk,
        "level": 0,
        "col": 0,
        "row": 0,
        "fmt": "png",
    }
    return {"users": users, "ids": ids, "export": export}


def concrete_path(endpoint: Endpoint, ids: dict[str, Any]) -> str:
    match = resolve(endpoint.path)
    if not match.url_name or not all(k in ids for k in match.kwargs):
        return endpoint.path  # admin URLs keep their sample values
    kwargs = {k: ids[k] for k in match.kwargs}
    return reverse(match.view_name, kwargs=kwargs)


def answer(response: Any, name: str, method: str, role: Role) -> str:
    if response.status_code in (401, 403):
        return "denied"
    if response.status_code == 404 and name in HIDDEN_FROM_OTHERS:
        return "denied"
    if name in LOGOUTS and method == "POST" and response.status_code in (200, 302):
        return "allowed"
    location = response.get("Location", "")
    if response.status_code in (301, 302) and "login" in location:
        return "denied"
    if response.status_code == 302 and location == "/admin/" and role != A:
        # The admin index, which sends anyone but an admin to the admin login.
        return "denied"
    if (
        response.status_code == 302
        and location == "/admin/"
        and name.startswith(SUPERUSER_ONLY_PREFIXES)
    ):
        return "denied"  # an object's history the admin cannot show: back to the index
    if response.status_code == 405:
        return "no_method"
    assert response.status_code < 500, (response.status_code, response.content[:500])
    return "allowed"


def body_for(name: str, ids: dict[str, Any], method: str) -> dict[str, Any]:
    """Small valid bodies where an empty one would be refused before the permission check."""
    if name in ("model-evaluate", "model-retrain", "retrain-job-list"):
        return {"export": ids["export_id"]}
    if name == "evaluation-list":
        return {"model_version": ids["version_id"], "export": ids["export_id"]}
    if name in ("model-rollback", "model-version-rollback"):
        return {"stage": "detector"}
    if name == "slide-reopen":
        return {"reason": "second opinion"}
    return {}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.name} {e.path}")
def test_every_role_gets_the_expected_answer(endpoint: Endpoint, world: dict[str, Any]) -> None:
    rule = rule_for(endpoint)
    assert rule is not None, f"no rule for {endpoint.name}: see test_every_url_has_a_rule"
    is_admin_site = endpoint.path.startswith("/admin/")
    path = concrete_path(endpoint, world["ids"])
    wrong: list[str] = []
    for role, user in world["users"].items():
        client = Client()
        for method in ADMIN_METHODS if is_admin_site else METHODS:
            client.force_login(user)
            data = body_for(endpoint.name, world["ids"], method)
            if method in ("GET", "POST"):
                response = getattr(client, method.lower())(path, data)
            else:
                response = client.generic(method, path, "{}", content_type="application/json")
            got = answer(response, endpoint.name, method, role)
            if method in rule:
                expected = "allowed" if role in rule[method] else "denied"
                ok = got == expected
            else:
                expected = "refused"
                ok = got in ("denied", "no_method")
            if not ok:
                wrong.append(
                    f"{role.value} {method} {path}: {got} ({response.status_code} "
                    f"{response.get('Location', '')}), "
                    f"expected {expected}"
                )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("role", "category", "allowed"),
    [
        (role, category, role in (A, P) or (role == C and category == "NILM"))
        for role in Role
        for category in BETHESDA_CLASSES
    ],
)
def test_sign_out_by_category(api: Any, role: Role, category: str, allowed: bool) -> None:
    """Pathologists (and admins) sign out anything; cytotechnologists only NILM; viewers
    nothing. Refused sign-outs leave the slide as it was."""
    user: User = UserFactory.create(role=role)
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    response = api(user).post(f"/api/slides/{slide.pk}/sign-out/", {"bethesda_category": category})
    slide.refresh_from_db()
    if allowed:
        assert response.status_code == 200, response.content
        assert slide.status == SlideStatus.SIGNED_OUT
    else:
        assert response.status_code == 403, response.content
        assert slide.status == SlideStatus.IN_REVIEW
        assert not hasattr(slide, "interpretation") or slide.interpretation is None
