from typing import Any

from django.http import HttpRequest

from papreview.accounts.roles import user_can_write, user_is_admin, user_primary_role


def roles(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    role = user_primary_role(user)
    return {
        "user_role": role.value if role else "",
        "user_can_write": user_can_write(user),
        "user_is_admin": user_is_admin(user),
    }
