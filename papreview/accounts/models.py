"""Accounts keep Django's User and Group (roles); this adds which sessions a user has open, so that
a deactivation or a forced password reset ends them at once (papreview.accounts.sessions)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class UserSession(models.Model):
    """One signed-in browser session of a user (recorded at sign-in, removed when it ends)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="open_sessions"
    )
    session_key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user_id}: session from {self.created_at:%Y-%m-%d %H:%M}"
