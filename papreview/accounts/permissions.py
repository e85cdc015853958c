from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from papreview.accounts.roles import NO_ROLE_MESSAGE, user_can_write, user_roles


class ReadOnlyForViewers(BasePermission):
    """Reads for every logged-in user; writes only for reviewer and admin roles."""

    message = (
        "Your account can read but not change anything (viewer role or no role). "
        "Ask an administrator for a pathologist or cytotechnologist role."
    )
    code = "read_only_role"

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return user_can_write(request.user)


class HasRole(BasePermission):
    """An account without any role sees no patient data (it exists, but nobody gave it work)."""

    message = NO_ROLE_MESSAGE
    code = "no_role"

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(user_roles(request.user))
