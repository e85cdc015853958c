"""Audit events from Django's signals: logins, failed logins, logouts, user and role changes.

Connected in AuditConfig.ready(). The other events are recorded by the services that make the
change (cases, review, datasets, analysis), in the same transaction.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, User
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest

from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record

# User fields whose changes are recorded (the password only as "changed", never its hash).
TRACKED_USER_FIELDS = (
    "username",
    "email",
    "first_name",
    "last_name",
    "is_active",
    "is_staff",
    "is_superuser",
)
_OLD = "_audit_old_values"


def _on_login(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    audit_record(action=AuditAction.LOGIN, actor=user, target=user, request=request)


def _on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    username = str(credentials.get("username") or "")
    audit_record(
        action=AuditAction.LOGIN_FAILED,
        actor=None,
        username=username,
        request=request,
        data={"username": username[:150]},
    )


def _on_logout(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    audit_record(action=AuditAction.LOGOUT, actor=user, target=user, request=request)


def _user_values(user: User) -> dict[str, Any]:
    return {name: getattr(user, name) for name in TRACKED_USER_FIELDS}


def _on_user_pre_save(sender: Any, instance: User, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    if instance.pk is None:
        return
    old = User.objects.filter(pk=instance.pk).values(*TRACKED_USER_FIELDS, "password").first()
    setattr(instance, _OLD, old)


def _on_user_post_save(sender: Any, instance: User, created: bool, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    if created:
        audit_record(action=AuditAction.USER_CREATED, target=instance, data=_user_values(instance))
        return
    old: dict[str, Any] | None = getattr(instance, _OLD, None)
    if old is None:
        return
    delattr(instance, _OLD)
    new = _user_values(instance)
    changes = {k: [old[k], v] for k, v in new.items() if old[k] != v}
    data: dict[str, Any] = {"user": instance.get_username(), "changes": changes}
    if old["password"] != instance.password:
        data["password_changed"] = True
    if changes or data.get("password_changed"):
        audit_record(action=AuditAction.USER_CHANGED, target=instance, data=data)


def _on_user_deleted(sender: Any, instance: User, **kwargs: Any) -> None:
    audit_record(
        action=AuditAction.USER_DELETED,
        target=instance,
        data={"user_id": instance.pk, "username": instance.get_username()},
    )


def _names(model: Any, pk_set: set[int] | None) -> list[str]:
    if not pk_set:
        return []
    if model is Group:
        return sorted(Group.objects.filter(pk__in=pk_set).values_list("name", flat=True))
    if model is User:
        return sorted(User.objects.filter(pk__in=pk_set).values_list("username", flat=True))
    return sorted(str(o) for o in model.objects.filter(pk__in=pk_set))


def _on_m2m_changed(
    sender: Any,
    instance: Any,
    action: str,
    reverse: bool,
    model: Any,
    pk_set: set[int] | None,
    **kwargs: Any,
) -> None:
    """User.groups / User.user_permissions / Group.permissions changed (from either side)."""
    if action == "pre_clear":
        # Remember what is cleared (post_clear has no pk_set).
        related = getattr(instance, _relation_name(sender, reverse))
        instance._audit_cleared = set(related.values_list("pk", flat=True))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if action == "post_clear":
        pk_set = getattr(instance, "_audit_cleared", set())
    if not pk_set:
        return
    verb = "added" if action == "post_add" else "removed"
    relation = _relation_name(sender, reverse)
    if isinstance(instance, User):
        users = [instance]
        data = {"user": instance.get_username(), "relation": relation, verb: _names(model, pk_set)}
    elif isinstance(instance, Group) and model is User:  # group.user_set.add(...)
        users = list(User.objects.filter(pk__in=pk_set))
        data = {"group": instance.name, "relation": "groups", verb: [instance.name]}
    else:  # group.permissions changed: the role itself changed
        audit_record(
            action=AuditAction.ROLES_CHANGED,
            target=instance,
            data={"group": str(instance), "relation": relation, verb: _names(model, pk_set)},
        )
        return
    for user in users:
        audit_record(
            action=AuditAction.ROLES_CHANGED,
            target=user,
            data={**data, "user": user.get_username()},
        )


def _relation_name(sender: Any, reverse: bool) -> str:
    if sender is User.groups.through:
        return "user_set" if reverse else "groups"
    if sender is User.user_permissions.through:
        return "user_set" if reverse else "user_permissions"
    return "group_set" if reverse else "permissions"


def connect() -> None:
    user_logged_in.connect(_on_login, dispatch_uid="audit-login")
    user_login_failed.connect(_on_login_failed, dispatch_uid="audit-login-failed")
    user_logged_out.connect(_on_logout, dispatch_uid="audit-logout")
    pre_save.connect(_on_user_pre_save, sender=User, dispatch_uid="audit-user-pre")
    post_save.connect(_on_user_post_save, sender=User, dispatch_uid="audit-user-post")
    post_delete.connect(_on_user_deleted, sender=User, dispatch_uid="audit-user-delete")
    for through in (User.groups.through, User.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(_on_m2m_changed, sender=through, dispatch_uid=f"audit-m2m-{through}")
