"""Schemathesis against the OpenAPI schema, signed in as each role and as an account with no
role, with every check schemathesis has (server errors, status codes, content types, headers and
bodies as documented, schema-violating input refused, schema-valid input accepted): no request
gets a 5xx, and every answer conforms to the schema (counts per role and check in the last test).

The one kind of refusal a schema cannot rule out is allowed, and only in its own words: valid-
looking input that names an object that does not exist ("No patient with id 0"), a wrong password,
an export whose filter matches no signed-out slide, or a rule between two fields (an export's
tile overlap under half its tile, its three split fractions not all zero).

The schema is generated in-process (drf-spectacular, as /api/schema/ serves it) and the calls go
to the WSGI application in-process, inside the test's transaction. Each operation gets a bounded
number of examples so the whole run stays near a few minutes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.core.failures import Failure, FailureGroup

from papreview.accounts.roles import Role
from papreview.wsgi import application
from tests.factories import CellFactory, PatientFactory, SlideFactory, UserFactory

MAX_EXAMPLES = 15
STATUSES: Counter[int] = Counter()  # every answer of the run, for the last test
BY_ROLE: dict[str, Counter[int]] = {}
NO_ROLE_ANSWERED: set[str] = set()  # paths that answered 2xx to an account with no role
CHECK_FAILURES: Counter[tuple[str, str]] = Counter()  # (role, check) -> failures
FIRST_FAILURE: dict[tuple[str, str], str] = {}  # one example of each, to read
ALLOWED_REJECTIONS: Counter[str] = Counter()  # role -> valid-looking input refused, allowed kinds
# What a schema cannot promise: the id exists, the password is right, something was signed out.
NAMES_A_MISSING_OBJECT = re.compile(r"No (active )?\w+ with id -?\d+")
STATE_CODES = {"invalid_credentials", "empty_export", "too_few_patients"}
# ... or a rule between two fields (the overlap under half the tile, three fractions not all 0)
CROSS_FIELD_RULES = ("fractions between 0 and 1", "under half a tile")
ROLES = ["pathologist", "cytotechnologist", "viewer", "admin", "none"]


def _schema() -> dict[str, Any]:
    generated = SchemaGenerator().get_schema(request=None, public=True)
    text = OpenApiJsonRenderer().render(generated).decode()
    # Chunks are raw bytes; schemathesis knows how to send application/octet-stream (the API
    # reads the body as a stream whatever its declared type).
    text = text.replace("application/offset+octet-stream", "application/octet-stream")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


schema = schemathesis.openapi.from_dict(_schema())
schema.app = application


@pytest.fixture
def auth_headers(db: None, role: str) -> dict[str, str]:
    """A user of the role (or none) and a few objects for the ids to hit."""
    user = UserFactory.create(role=None if role == "none" else Role(role))
    patient = PatientFactory.create()
    for _ in range(2):
        CellFactory.create(slide=SlideFactory.create(patient=patient))
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}"}


@pytest.fixture(autouse=True)
def keep_the_test_transaction() -> Iterator[None]:
    """Django closes 'obsolete' connections at the end of each request; in a test transaction
    that would end the transaction (Django's own test client switches this off the same way)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any, role: str, auth_headers: dict[str, str]) -> None:
    response = case.call(headers=auth_headers)
    STATUSES[response.status_code] += 1
    BY_ROLE.setdefault(role, Counter())[response.status_code] += 1
    if role == "none" and 200 <= response.status_code < 300:
        NO_ROLE_ANSWERED.add(case.path)
    try:
        case.validate_response(response, headers=auth_headers)
    except (Failure, FailureGroup) as exc:  # one failure, or a group of them
        for failure in getattr(exc, "exceptions", [exc]):
            _count_failure(role, case, response, failure)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}\n"
        f"{case.as_curl_command()}\n{response.text[:2000]}"
    )


def _count_failure(role: str, case: Any, response: Any, failure: BaseException) -> None:
    check = type(failure).__name__
    if check == "RejectedPositiveData" and response.status_code == 400:
        body = response.json()
        if (
            body.get("code") in STATE_CODES
            or NAMES_A_MISSING_OBJECT.search(body.get("detail", ""))
            or any(rule in body.get("detail", "") for rule in CROSS_FIELD_RULES)
        ):
            ALLOWED_REJECTIONS[role] += 1
            return
    CHECK_FAILURES[(role, check)] += 1
    FIRST_FAILURE.setdefault(
        (role, check), f"{case.as_curl_command()}\n-> {response.text[:500]}\n{failure}"
    )


def test_the_fuzzing_was_logged_in_and_reached_the_views() -> None:
    """Runs after the cases above: they were authenticated (no 401) and many got through."""
    assert sum(STATUSES.values()) > 300, STATUSES
    assert STATUSES[401] == 0, STATUSES
    assert sum(n for code, n in STATUSES.items() if 200 <= code < 300) > 30, STATUSES
    assert all(code < 500 for code in STATUSES), STATUSES
    assert set(BY_ROLE) == set(ROLES), BY_ROLE
    for role, answers in sorted(BY_ROLE.items()):
        errors = sum(n for code, n in answers.items() if code >= 500)
        failed = {check: n for (r, check), n in CHECK_FAILURES.items() if r == role}
        print(
            f"{role}: {sum(answers.values())} requests, {errors} server errors, "
            f"check failures {failed or 0}, refusals of missing objects/state "
            f"{ALLOWED_REJECTIONS[role]}, {dict(sorted(answers.items()))}"
        )
    assert not CHECK_FAILURES, "\n\n".join(
        f"{role} {check} x{CHECK_FAILURES[(role, check)]}:\n{example}"
        for (role, check), example in FIRST_FAILURE.items()
    )
    # an account with no role is answered only where it asks who it is, or for a token
    assert {"/api/auth/me/", "/api/auth/token/"} >= NO_ROLE_ANSWERED, NO_ROLE_ANSWERED
