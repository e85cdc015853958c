"""Ending a user's sessions at once (deactivation, forced password reset, two-factor removed).

Django finds a session's user from the session, not the other way round: every sign-in records its
session key (UserSession), and `user_sessions_end` deletes those sessions from the session store.
Inactive users are also refused by the authentication backends, so a session that was missed (an
older one, another engine) is still of no use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.http import HttpRequest

from papreview.accounts.models import UserSession


def user_sessions_end(*, user: User) -> int:
    """Delete every recorded session of the user. Returns how many."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    keys = list(UserSession.objects.filter(user=user).values_list("session_key", flat=True))
    for key in keys:
        store(session_key=key).delete()
    UserSession.objects.filter(user=user).delete()
    return len(keys)


def _on_login(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if session is None or not key:
        return
    UserSession.objects.update_or_create(session_key=key, defaults={"user": user})


def _on_logout(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        UserSession.objects.filter(session_key=key).delete()


def connect_session_tracking() -> None:
    user_logged_in.connect(_on_login, dispatch_uid="papreview-session-login")
    user_logged_out.connect(_on_logout, dispatch_uid="papreview-session-logout")
