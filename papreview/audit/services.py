"""The one write of the audit trail: `audit_record`. There is no update or delete."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.http import HttpRequest

from papreview.audit.context import client_address, current_request
from papreview.audit.models import AuditAction, AuditEvent

logger = logging.getLogger(__name__)


def _json_safe(data: dict[str, Any]) -> dict[str, Any]:
    import json

    result: dict[str, Any] = json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))
    return result


def _ids_of(target: models.Model | None) -> tuple[str, str, int | None, int | None]:
    """Kind and id of the target, and the slide and patient ids it belongs to (never names)."""
    if target is None:
        return "", "", None, None
    kind = target._meta.label_lower
    slide_id: int | None = None
    patient_id: int | None = None
    if kind == "cases.patient":
        patient_id = target.pk
    elif kind == "cases.slide":
        slide_id = target.pk
        patient_id = getattr(target, "patient_id", None)
    else:
        slide_id = getattr(target, "slide_id", None)
        slide = target._state.fields_cache.get("slide")
        if slide is not None and slide.pk == slide_id:  # already loaded: no query
            patient_id = getattr(slide, "patient_id", None)
        elif slide_id is not None:
            # Follow the target's own `slide` relation: audit sits below the domain apps and
            # imports none of them.
            slide_model = type(target)._meta.get_field("slide").related_model
            assert slide_model is not None and not isinstance(slide_model, str)
            found = slide_model._default_manager.filter(pk=slide_id).values_list(
                "patient_id", flat=True
            )
            patient_id = found.first()
    return kind, str(target.pk), slide_id, patient_id


def audit_record(
    *,
    action: AuditAction | str,
    actor: User | AnonymousUser | None = None,
    target: models.Model | None = None,
    data: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
    username: str = "",
) -> AuditEvent:
    """Append one event. The address (and, without `actor`, the logged-in user) comes from
    `request`, or from the request being served (see papreview.audit.context).

    Call it inside the transaction of the change it records, so that both commit or neither.
    """
    request = request if request is not None else current_request.get()
    if actor is None and request is not None:
        actor = getattr(request, "user", None)
    user = actor if isinstance(actor, User) and actor.is_authenticated else None
    kind, target_id, slide_id, patient_id = _ids_of(target)
    return AuditEvent.objects.create(
        action=AuditAction(action),
        actor=user,
        actor_username=(user.get_username() if user is not None else username)[:150],
        address=client_address(request),
        target_type=kind,
        target_id=target_id,
        slide_id=slide_id,
        patient_id=patient_id,
        data=_json_safe(data or {}),
    )


# A user's repeated reads of the same slide within this time (the review page polls the slide
# while it is analysed) are one "opened" event.
SLIDE_OPENED_DEDUPE_S = 60


def _record_once(
    *,
    action: AuditAction,
    user: Any,
    target: models.Model | None,
    data: dict[str, str],
    within_s: int,
    request: HttpRequest | None = None,
) -> AuditEvent | None:
    """`audit_record` unless the same user already has this event (action, target, data) within
    `within_s`. The cache answers repeats without a query (a gallery asks for many crops); the
    table decides across processes."""
    from datetime import timedelta

    from django.core.cache import cache
    from django.utils import timezone

    if not (isinstance(user, User) and user.is_authenticated):
        return None
    kind, target_id, _, _ = _ids_of(target)
    key = "audit-once:" + ":".join(
        [str(action), str(user.pk), kind, target_id, *(f"{k}={v}" for k, v in data.items())]
    )
    if not cache.add(key, 1, timeout=within_s):
        return None
    recent = AuditEvent.objects.filter(
        action=action,
        actor=user,
        target_type=kind,
        target_id=target_id,
        at__gte=timezone.now() - timedelta(seconds=within_s),
        **{f"data__{k}": v for k, v in data.items()},
    ).exists()
    if recent:
        return None
    return audit_record(action=action, actor=user, target=target, data=data, request=request)


def audit_slide_opened(*, slide: models.Model, user: Any, via: str) -> AuditEvent | None:
    """Record that `user` opened the slide (review page or report), once per minute."""
    return _record_once(
        action=AuditAction.SLIDE_OPENED,
        user=user,
        target=slide,
        data={"via": via},
        within_s=SLIDE_OPENED_DEDUPE_S,
    )


# The pages' own polling (the queue's progress, the review page's look for others' changes) sends
# this header: a poll is not a person reading, and is not audited.
POLL_HEADER = "HTTP_X_PAPREVIEW_POLL"
READ_DEDUPE_S = 60


def audit_read(
    *, request: HttpRequest, what: str, target: models.Model | None = None
) -> AuditEvent | None:
    """Record a read of patient data (who, what, which slide or patient, when, from where), once
    per user, `what` and target in a minute; none for the pages' polling (POLL_HEADER)."""
    if request.META.get(POLL_HEADER) == "1":
        return None
    return _record_once(
        action=AuditAction.PATIENT_DATA_READ,
        user=getattr(request, "user", None),
        target=target,
        data={"what": what},
        within_s=READ_DEDUPE_S,
        request=request,
    )
