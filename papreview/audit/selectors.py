from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from papreview.audit.models import AuditAction, AuditEvent


def audit_event_list(
    *,
    action: AuditAction | str | None = None,
    actor_username: str | None = None,
    slide_id: int | None = None,
    patient_id: int | None = None,
    since: datetime | None = None,
) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.all()
    if action:
        qs = qs.filter(action=action)
    if actor_username:
        qs = qs.filter(actor_username=actor_username)
    if slide_id is not None:
        qs = qs.filter(slide_id=slide_id)
    if patient_id is not None:
        qs = qs.filter(patient_id=patient_id)
    if since is not None:
        qs = qs.filter(at__gte=since)
    return qs.order_by("-at", "-id")


def login_failures_recent(
    *, username: str | None = None, address: str | None = None, limit: int, since: datetime
) -> list[datetime]:
    """Times of the latest failed logins (newest first, at most `limit`, not before `since`) for
    a username (only those after its last successful login) or from an address."""
    qs = AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED, at__gte=since)
    if username is not None:
        last_login = (
            AuditEvent.objects.filter(
                action=AuditAction.LOGIN, actor_username=username, at__gte=since
            )
            .order_by("-at")
            .values_list("at", flat=True)
            .first()
        )
        qs = qs.filter(actor_username=username)
        if last_login is not None:
            qs = qs.filter(at__gt=last_login)
    if address is not None:
        qs = qs.filter(address=address)
    return list(qs.order_by("-at").values_list("at", flat=True)[:limit])
