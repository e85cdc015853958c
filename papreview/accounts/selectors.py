from django.contrib.auth.models import User
from django.db.models import QuerySet

from papreview.accounts.roles import Role


def user_list(*, role: Role | None = None, active_only: bool = True) -> QuerySet[User]:
    qs = User.objects.all().prefetch_related("groups").order_by("username")
    if active_only:
        qs = qs.filter(is_active=True)
    if role is not None:
        qs = qs.filter(groups__name=role.value)
    return qs
