from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef, QuerySet
from django_otp.plugins.otp_totp.models import TOTPDevice

from papreview.accounts.roles import ROLE_NAMES, Role
from papreview.audit.models import AuditEvent


def user_list(*, role: Role | None = None, active_only: bool = True) -> QuerySet[User]:
    qs = User.objects.all().prefetch_related("groups").order_by("username")
    if active_only:
        qs = qs.filter(is_active=True)
    if role is not None:
        qs = qs.filter(groups__name=role.value)
    return qs


def user_admin_list(*, search: str = "", status: str = "") -> QuerySet[User]:
    """The users page: every account with its role groups (one query) and `has_2fa`."""
    from django.contrib.auth.models import Group
    from django.db.models import Prefetch, Q

    qs = (
        User.objects.all()
        .annotate(has_2fa=Exists(TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)))
        .prefetch_related(
            Prefetch(
                "groups",
                queryset=Group.objects.filter(name__in=ROLE_NAMES).order_by("name"),
                to_attr="role_groups",
            )
        )
        .order_by("-is_active", "username")
    )
    if search:
        qs = qs.filter(
            Q(username__icontains=search)
            | Q(email__icontains=search)
            | Q(first_name__icontains=search)
            | Q(last_name__icontains=search)
        )
    if status == "active":
        qs = qs.filter(is_active=True)
    elif status == "inactive":
        qs = qs.filter(is_active=False)
    elif status in ROLE_NAMES:
        qs = qs.filter(groups__name=status)
    return qs


def user_admin_get(*, pk: int) -> User | None:
    return user_admin_list().filter(pk=pk).first()


def user_roles_of(user: User) -> list[Role]:
    """The roles of a user from `user_admin_list` (no query), most capable first."""
    names = {g.name for g in getattr(user, "role_groups", user.groups.all())}
    return [r for r in Role if r.value in names]


def user_audit_events(*, user: User, limit: int = 20) -> list[AuditEvent]:
    """The latest audit events about or by the user, for their page."""
    from django.db.models import Q

    qs = AuditEvent.objects.filter(
        Q(target_type="auth.user", target_id=str(user.pk)) | Q(actor_id=user.pk)
    ).order_by("-at", "-id")
    events = list(qs[:limit])
    for event in events:
        event.details = "; ".join(  # type: ignore[attr-defined]
            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in event.data.items()
            if k not in ("user", "relation", "username")
        )
    return events
