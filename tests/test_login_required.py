"""Every URL in the resolver refuses anonymous users, so new endpoints are covered automatically.

The walk builds a concrete path for each pattern (sample values for converters and regex groups),
checks that it resolves back to the same pattern, then GETs and POSTs it without logging in:
API views must answer 401 or 403, pages must redirect (302) to a login page.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.converters import IntConverter, PathConverter, SlugConverter, UUIDConverter
from django.urls.resolvers import RegexPattern, RoutePattern

pytestmark = pytest.mark.django_db

# The only URLs that may be opened without logging in.
PUBLIC = {"login", "healthz", "api-token", "admin:login"}
# Logging out needs no login either (it just ends a session, if any).
PUBLIC |= {"logout", "admin:logout"}
# The second step of signing in, the one-time links of invitations and password resets, and
# single sign-on (404 while it is not set up) come before any login.
PUBLIC |= {"login-code", "account-invite", "account-reset"}
PUBLIC |= {"oidc_authentication_init", "oidc_authentication_callback"}

SAMPLE_VALUES = ("1", "auth", "x", str(uuid.UUID(int=1)), "a/b")
_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>(?:[^()]|\([^()]*\))*)\)")


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str


def _route_sample(pattern: RoutePattern) -> str:
    route = str(pattern)

    def value(match: re.Match[str]) -> str:
        converter = pattern.converters[match.group(2)]
        if isinstance(converter, IntConverter):
            return "1"
        if isinstance(converter, UUIDConverter):
            return str(uuid.UUID(int=1))
        if isinstance(converter, SlugConverter | PathConverter):
            return "x"
        return "x"

    return re.sub(r"<(?:(\w+):)?(\w+)>", value, route)


def _regex_sample(pattern: RegexPattern) -> str:
    regex = str(pattern).lstrip("^").rstrip("$").replace("\\Z", "")

    def value(match: re.Match[str]) -> str:
        body = match.group("body")
        for candidate in SAMPLE_VALUES:
            if re.fullmatch(body, candidate):
                return candidate
        raise AssertionError(f"no sample value matches the URL group {match.group(0)!r}")

    sample = _GROUP.sub(value, regex)
    return re.sub(r"\\(.)", r"\1", sample).replace("?", "")


def _walk(
    patterns: list[URLPattern | URLResolver], prefix: str = "", namespace: str = ""
) -> Iterator[Endpoint]:
    for entry in patterns:
        part = (
            _route_sample(entry.pattern)
            if isinstance(entry.pattern, RoutePattern)
            else _regex_sample(entry.pattern)  # type: ignore[arg-type]
        )
        if isinstance(entry, URLResolver):
            ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, prefix + part, ns)
        else:
            name = f"{namespace}{entry.name}" if entry.name else f"<unnamed {prefix + part}>"
            yield Endpoint(name=name, path="/" + prefix + part)


ENDPOINTS = sorted(set(_walk(get_resolver().url_patterns)), key=lambda e: e.path)
PROTECTED = [e for e in ENDPOINTS if e.name not in PUBLIC]


def test_the_walk_found_the_api_and_the_admin() -> None:
    names = {e.name for e in ENDPOINTS}
    assert {"slide-list", "cell-detail", "api-schema", "admin:index", "home"} <= names
    assert len(ENDPOINTS) > 30
    assert names >= PUBLIC  # every public name is a real URL (no stale exemptions)


@pytest.mark.parametrize("endpoint", PROTECTED, ids=lambda e: f"{e.name} {e.path}")
def test_anonymous_users_are_refused(client, endpoint: Endpoint) -> None:
    match = resolve(endpoint.path)
    assert match.view_name == endpoint.name or endpoint.name.startswith("<unnamed")
    for method in ("get", "post"):
        response = getattr(client, method)(endpoint.path)
        assert response.status_code in (302, 401, 403), (method, endpoint, response.status_code)
        if response.status_code == 302:
            assert "login" in response["Location"], (method, endpoint, response["Location"])


def test_public_urls(client) -> None:
    assert client.get("/accounts/login/").status_code == 200
    assert client.get("/admin/login/").status_code == 200
    assert client.get("/healthz").status_code in (200, 503)
    assert client.get("/api/auth/token/").status_code == 405  # POST only, and open to all
