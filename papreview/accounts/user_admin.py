"""Writes of the users page (administrators): invite, change roles, deactivate and reactivate,
force a password reset, remove two-factor. Every change is in the audit trail: the user and role
changes through the audit app's signals (who, what before and after), the rest here.

An administrator cannot take away their own admin role or deactivate themselves (nobody would be
left to undo it), and only a superuser changes a superuser.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.http import HttpRequest

from papreview.accounts.emails import account_email_send
from papreview.accounts.links import account_link, link_expires
from papreview.accounts.roles import Role, forget_roles
from papreview.accounts.services import user_create, user_set_roles
from papreview.accounts.sessions import user_sessions_end
from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.core.exceptions import ApplicationError, PermissionDeniedError


class UserAdminError(ApplicationError):
    code = "user_admin"


def _check_may_change(*, user: User, by: User) -> None:
    if user.is_superuser and not by.is_superuser:
        raise PermissionDeniedError("Only a superuser can change a superuser's account.")


def _role_list(roles: Iterable[Role]) -> str:
    return ", ".join(r.value for r in Role if r in set(roles)) or "no role"


@transaction.atomic
def user_invite(
    *,
    email: str,
    roles: Iterable[Role],
    by: User,
    username: str = "",
    first_name: str = "",
    last_name: str = "",
    request: HttpRequest | None = None,
) -> User:
    """Make an account with no usable password and email its one-time link to set one.

    The email is sent inside the transaction: when the mail server refuses it
    (EmailNotSentError), no account is left behind."""
    from papreview.accounts.two_factor import two_factor_required

    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ValidationError({"email": exc.messages}) from exc
    wanted = [Role(r) for r in roles]
    if not wanted:
        raise ValidationError({"roles": ["Choose at least one role."]})
    if User.objects.filter(email__iexact=email).exists():
        raise ValidationError({"email": ["An account with this email address already exists."]})
    username = (username or email).strip()
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError({"username": ["This username is taken."]})
    user = user_create(
        username=username,
        password=None,
        role=wanted[0],
        email=email,
        first_name=first_name,
        last_name=last_name,
    )
    user_set_roles(user=user, roles=wanted)
    audit_record(
        action=AuditAction.USER_INVITED,
        actor=by,
        target=user,
        request=request,
        data={"user": user.username, "roles": [r.value for r in wanted]},
    )
    account_email_send(
        template="invite",
        to=email,
        context={
            "username": user.username,
            "invited_by": by.get_full_name() or by.username,
            "roles": _role_list(wanted),
            "link": account_link(user=user, kind="invite", request=request),
            "expires": link_expires("invite"),
            "two_factor": two_factor_required(user),
        },
    )
    return user


@transaction.atomic
def user_roles_change(*, user: User, roles: Iterable[Role], by: User) -> User:
    """Set the user's roles (taking one away revokes their API tokens; see tokens.py)."""
    _check_may_change(user=user, by=by)
    wanted = {Role(r) for r in roles}
    if user.pk == by.pk and Role.ADMIN not in wanted and not by.is_superuser:
        raise UserAdminError("You cannot take away your own admin role: ask another administrator.")
    user_set_roles(user=user, roles=wanted)
    forget_roles(user)
    return user


@transaction.atomic
def user_deactivate(*, user: User, by: User) -> int:
    """The account can no longer sign in; its open sessions and API tokens end now. Returns how
    many sessions ended."""
    _check_may_change(user=user, by=by)
    if user.pk == by.pk:
        raise UserAdminError("You cannot deactivate your own account.")
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])  # signals: audit, API tokens revoked
    ended = user_sessions_end(user=user)
    audit_record(
        action=AuditAction.SESSIONS_ENDED,
        actor=by,
        target=user,
        data={"user": user.username, "sessions": ended, "why": "deactivated"},
    )
    return ended


@transaction.atomic
def user_reactivate(*, user: User, by: User) -> User:
    _check_may_change(user=user, by=by)
    if not user.is_active:
        user.is_active = True
        user.save(update_fields=["is_active"])
    return user


@transaction.atomic
def user_password_reset_force(*, user: User, by: User, request: HttpRequest | None = None) -> None:
    """The current password stops working now (sessions and API tokens end); the user gets an
    email with a one-time link to choose a new one."""
    _check_may_change(user=user, by=by)
    if not user.email:
        raise UserAdminError("This account has no email address to send the reset link to.")
    user.set_unusable_password()
    user.save(update_fields=["password"])  # signals: audit (password changed), tokens revoked
    ended = user_sessions_end(user=user)
    audit_record(
        action=AuditAction.PASSWORD_RESET_SENT,
        actor=by,
        target=user,
        request=request,
        data={"user": user.username, "sessions_ended": ended},
    )
    account_email_send(
        template="reset",
        to=user.email,
        context={
            "username": user.username,
            "reason": (
                f"{by.get_full_name() or by.username} has asked you to choose a new password. "
                "Your old password no longer works."
            ),
            "link": account_link(user=user, kind="reset", request=request),
            "expires": link_expires("reset"),
        },
    )


@transaction.atomic
def user_password_set(*, user: User, password: str, via: str) -> User:
    """Set the password from an invitation or reset link (the same validators as everywhere)."""
    from django.contrib.auth.password_validation import validate_password

    validate_password(password, user)
    user.set_password(password)
    user.save(update_fields=["password"])
    audit_record(action=AuditAction.PASSWORD_SET, actor=user, target=user, data={"via": via})
    return user
