"""Roles are Django groups (created by migration 0001). One place decides what each role may do.

- admin: manages users, roles and reference data in the Django admin; may do everything below.
- pathologist: reviews cells and signs out any interpretation.
- cytotechnologist: reviews cells; signs out only NILM (negative) slides.
- viewer: reads everything, changes nothing.

A superuser counts as admin.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from inference.types import Bethesda


class Role(StrEnum):
    ADMIN = "admin"
    PATHOLOGIST = "pathologist"
    CYTOTECHNOLOGIST = "cytotechnologist"
    VIEWER = "viewer"


ROLE_NAMES: tuple[str, ...] = tuple(r.value for r in Role)
WRITE_ROLES: frozenset[Role] = frozenset({Role.ADMIN, Role.PATHOLOGIST, Role.CYTOTECHNOLOGIST})
# What each role may sign out (slide-level Bethesda category); None means any category.
SIGN_OUT_CATEGORIES: dict[Role, frozenset[str] | None] = {
    Role.ADMIN: None,
    Role.PATHOLOGIST: None,
    Role.CYTOTECHNOLOGIST: frozenset({Bethesda.NILM.value}),
}

_CACHE_ATTR = "_papreview_roles"


def user_roles(user: Any) -> frozenset[Role]:
    """The user's roles (cached on the user object for the request)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cached: frozenset[Role] | None = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    names = set(user.groups.filter(name__in=ROLE_NAMES).values_list("name", flat=True))
    return roles_preload(user, names)


def roles_preload(user: Any, group_names: set[str]) -> frozenset[Role]:
    """Fill the per-request roles cache from the user's group names (read with the user, or by
    `user_roles`); a superuser is an admin too. Returns the roles."""
    roles = {Role(n) for n in group_names if n in ROLE_NAMES}
    if user.is_superuser:
        roles.add(Role.ADMIN)
    result = frozenset(roles)
    setattr(user, _CACHE_ATTR, result)
    return result


def forget_roles(user: Any) -> None:
    """Drop the cached roles after a change of groups."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def user_has_role(user: Any, *roles: Role) -> bool:
    return bool(user_roles(user) & set(roles))


def user_is_admin(user: Any) -> bool:
    return user_has_role(user, Role.ADMIN)


def user_can_write(user: Any) -> bool:
    """Everyone but viewers (and users with no role at all) may change data."""
    return bool(user_roles(user) & WRITE_ROLES)


def user_can_sign_out(user: Any, category: str) -> bool:
    for role in user_roles(user):
        if role not in SIGN_OUT_CATEGORIES:
            continue
        allowed = SIGN_OUT_CATEGORIES[role]
        if allowed is None or category in allowed:
            return True
    return False


def user_can_reopen(user: Any) -> bool:
    """Only a pathologist (or admin) may reopen a signed-out slide."""
    return user_has_role(user, Role.PATHOLOGIST, Role.ADMIN)


def user_primary_role(user: Any) -> Role | None:
    """The most capable role, for display."""
    roles = user_roles(user)
    return next((r for r in Role if r in roles), None)


# What an account without any role is told, by the API (permissions.HasRole) and the pages
# (middleware.RoleRequiredMiddleware).
NO_ROLE_MESSAGE = (
    "Your account has no role yet, so it cannot see patients or slides. "
    "Ask an administrator for a role."
)
