"""The audit trail: one row per event, never changed or deleted.

The table is append-only in the database (triggers from migration 0002 raise on UPDATE and
DELETE, on PostgreSQL and SQLite); the model and its manager refuse updates and deletes too.
Rows hold ids (patient, slide, cell, user), never a patient's identifier, and no foreign-key
constraints: deleting a user or a slide must not touch (or be blocked by) their history.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class AuditAction(models.TextChoices):
    LOGIN = "login", "Logged in"
    LOGIN_FAILED = "login_failed", "Failed login"
    LOGIN_LOCKED = "login_locked", "Login refused (locked)"
    LOGOUT = "logout", "Logged out"
    TOKEN_ISSUED = "token_issued", "API token issued"
    UPLOAD = "upload", "Slide uploaded"
    SLIDE_OPENED = "slide_opened", "Slide opened"
    PATIENT_DATA_READ = "patient_data_read", "Patient data read"
    PATIENT_CREATED = "patient_created", "Patient created"
    SLIDE_ASSIGNED = "slide_assigned", "Slide assigned"
    CELL_CHANGED = "cell_changed", "Cell changed"
    CELL_ADDED = "cell_added", "Cell added"
    SIGN_OUT = "sign_out", "Slide signed out"
    REOPEN = "reopen", "Slide reopened"
    REFER = "refer", "Slide referred to a pathologist"
    CELLS_CLEARED = "cells_cleared", "Flagged cells reviewed: none abnormal"
    DRAFT_SAVED = "draft_saved", "Interpretation draft saved"
    EXPORT_CREATED = "export_created", "Dataset export requested"
    EXPORT_DOWNLOADED = "export_downloaded", "Dataset export downloaded"
    MODEL_ACTIVATED = "model_activated", "Model version activated"
    USER_CREATED = "user_created", "User created"
    USER_CHANGED = "user_changed", "User changed"
    USER_DELETED = "user_deleted", "User deleted"
    ROLES_CHANGED = "roles_changed", "User roles changed"
    USER_INVITED = "user_invited", "User invited"
    PASSWORD_RESET_SENT = "password_reset_sent", "Password reset sent"
    PASSWORD_SET = "password_set", "Password set from a link"
    SESSIONS_ENDED = "sessions_ended", "Sessions ended"
    TWO_FACTOR_ENROLLED = "two_factor_enrolled", "Two-factor sign-in set up"
    TWO_FACTOR_RESET = "two_factor_reset", "Two-factor sign-in removed"
    RECOVERY_CODES_NEW = "recovery_codes_new", "New recovery codes"


class AppendOnlyQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise TypeError("Audit events are append-only: they cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("Audit events are append-only: they cannot be deleted.")


class AuditEvent(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    # Who: the user (no constraint: the row outlives the user) and the name at the time.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True, db_index=True)
    address = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    # What: the kind and id of the object, the slide and patient it belongs to (ids only).
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    slide_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    patient_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ("-at", "-id")
        indexes = [
            models.Index(fields=["action", "actor_username", "at"], name="audit_action_user_at"),
            models.Index(fields=["action", "address", "at"], name="audit_action_addr_at"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_username or '-'} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise TypeError("Audit events are append-only: they cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("Audit events are append-only: they cannot be deleted.")
