"""Writes for accounts: users, their role (a group) and API tokens."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from papreview.accounts.roles import ROLE_NAMES, Role, forget_roles
from papreview.accounts.tokens import token_expired
from papreview.core.exceptions import ApplicationError


class InvalidCredentialsError(ApplicationError):
    status_code = 400
    code = "invalid_credentials"


@transaction.atomic
def user_set_roles(*, user: User, roles: Iterable[Role]) -> User:
    """Replace the user's role groups (made first where missing). The admin role also gets Django
    admin (staff) access."""
    wanted = {Role(r) for r in roles}
    role_groups = list(Group.objects.filter(name__in=ROLE_NAMES))
    for missing in wanted - {g.name for g in role_groups}:
        # The roles migration makes the groups; a flushed (test) database has lost them.
        role_groups.append(Group.objects.get_or_create(name=missing.value)[0])
    held = set(user.groups.values_list("name", flat=True)) if user.pk else set()
    # Only real changes, so that the audit trail lists what was granted and taken away.
    user.groups.remove(*[g for g in role_groups if g.name not in wanted and g.name in held])
    user.groups.add(*[g for g in role_groups if g.name in wanted and g.name not in held])
    staff = Role.ADMIN in wanted or user.is_superuser
    if user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])
    forget_roles(user)
    return user


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str | None,
    role: Role,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    is_superuser: bool = False,
) -> User:
    user = User(
        username=username,
        email=email,
        first_name=first_name,
        last_name=last_name,
        is_superuser=is_superuser,
        is_staff=is_superuser,
    )
    if password:
        try:  # the same validators (AUTH_PASSWORD_VALIDATORS) as the pages and the admin
            validate_password(password, user)
        except ValidationError as exc:
            raise ValidationError({"password": exc.messages}) from exc
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    return user_set_roles(user=user, roles=[role])


class TwoFactorCodeError(ApplicationError):
    status_code = 400
    code = "two_factor_code"


class TwoFactorSetupRequiredError(ApplicationError):
    status_code = 403
    code = "two_factor_required"


def auth_token_obtain(
    *, username: str, password: str, code: str = "", request: HttpRequest | None = None
) -> Token:
    """Check the credentials and return the user's API token (created on first use).

    A locked username or address (too many failures, see papreview.accounts.lockout) gets
    LoginLockedError before the password is checked. An account with two-factor must send its
    code (a wrong one is a failed login); one whose role needs two-factor but has not set it up
    is refused until it has (in the browser). Success and failure are audit events.
    """
    from papreview.accounts.lockout import login_lockout_check
    from papreview.accounts.two_factor import (
        two_factor_enabled,
        two_factor_required,
        two_factor_verify,
    )
    from papreview.audit.models import AuditAction
    from papreview.audit.services import audit_record

    login_lockout_check(username=username, request=request)
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        raise InvalidCredentialsError(
            "Unknown username or wrong password. Check both and try again."
        )
    if two_factor_enabled(user):
        if not code.strip():
            raise TwoFactorCodeError(
                "This account has two-factor sign-in: send the code of your authenticator app "
                "(or a recovery code) as `code`."
            )
        if two_factor_verify(user=user, code=code) is None:
            audit_record(
                action=AuditAction.LOGIN_FAILED,
                actor=None,
                username=user.username,
                request=request,
                data={"username": user.username[:150], "why": "two_factor_code"},
            )
            raise TwoFactorCodeError("The two-factor code is not right (or was already used).")
    elif two_factor_required(user):
        raise TwoFactorSetupRequiredError(
            "Your role needs two-factor sign-in: set it up in the browser (two-factor page), "
            "then ask for a token with your code."
        )
    token, _ = Token.objects.get_or_create(user=user)
    if token_expired(token):  # rotation: a fresh key once the old one expired
        token.delete()
        token = Token.objects.create(user=user)
    audit_record(
        action=AuditAction.LOGIN, actor=user, target=user, request=request, data={"via": "token"}
    )
    return token
