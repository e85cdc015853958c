"""Fixtures shared by the platform tests (the real PostgreSQL and Redis; see settings/test.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from papreview.accounts.roles import Role
from tests.factories import UserFactory

# One Chromium for the whole session, whichever package's browser tests run first.
# Shared fixtures: the browser (Chromium through Playwright) and stored slides with cells.
pytest_plugins = ["testkit.browser", "testkit.fixtures", "testkit.mail"]


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path: Path) -> Path:
    """Every test stores files in its own folder, so 'nothing was stored' can be checked."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def user_with_role(db) -> Callable[[Role], User]:
    def make(role: Role) -> User:
        return UserFactory.create(role=role)

    return make


@pytest.fixture
def admin_user(user_with_role) -> User:
    return user_with_role(Role.ADMIN)


@pytest.fixture
def pathologist(user_with_role) -> User:
    return user_with_role(Role.PATHOLOGIST)


@pytest.fixture
def cytotech(user_with_role) -> User:
    return user_with_role(Role.CYTOTECHNOLOGIST)


@pytest.fixture
def viewer(user_with_role) -> User:
    return user_with_role(Role.VIEWER)


@pytest.fixture
def api() -> Callable[[User | None], APIClient]:
    """An API client logged in as the given user (token auth), or anonymous for None."""

    def make(user: User | None = None) -> APIClient:
        client = APIClient()
        if user is not None:
            from rest_framework.authtoken.models import Token

            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make
