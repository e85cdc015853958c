"""Schemathesis against the OpenAPI schema, with a logged-in pathologist: no request it makes
gets a 5xx.

The schema is generated in-process (drf-spectacular, as /api/schema/ serves it) and the calls go
to the WSGI application in-process, inside the test's transaction. Each operation gets a bounded
number of examples so the whole run stays near a minute.
"""

from __future__ import annotations

import json
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

from papreview.accounts.roles import Role
from papreview.wsgi import application
from tests.factories import CellFactory, PatientFactory, SlideFactory, UserFactory

MAX_EXAMPLES = 15
STATUSES: Counter[int] = Counter()  # every answer of the run, for the last test


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
def auth_headers(db: None) -> dict[str, str]:
    """A pathologist (may write, may sign out) and a few objects for the ids to hit."""
    user = UserFactory.create(role=Role.PATHOLOGIST)
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
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any, auth_headers: dict[str, str]) -> None:
    response = case.call(headers=auth_headers)
    STATUSES[response.status_code] += 1
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}\n"
        f"{case.as_curl_command()}\n{response.text[:2000]}"
    )


def test_the_fuzzing_was_logged_in_and_reached_the_views() -> None:
    """Runs after the cases above: they were authenticated (no 401) and many got through."""
    assert sum(STATUSES.values()) > 300, STATUSES
    assert STATUSES[401] == 0, STATUSES
    assert sum(n for code, n in STATUSES.items() if 200 <= code < 300) > 30, STATUSES
    assert all(code < 500 for code in STATUSES), STATUSES
