from typing import Any

from django.contrib.auth.models import Group, Permission

from papreview.accounts.roles import Role

# Apps whose models the admin role manages in the Django admin.
ADMIN_MANAGED_APPS = (
    "auth",
    "authtoken",
    "cases",
    "analysis",
    "review",
    "datasets",
    "registry",
    "audit",
    "uploads",
    "workflow",
)


def grant_admin_group_permissions(sender: Any, **kwargs: Any) -> None:
    """After migrate (when permissions exist), give the admin group every model permission."""
    using = kwargs.get("using", "default")
    if kwargs.get("app_config") is not None:
        # This app comes before django.contrib.auth (its createsuperuser), so this receiver runs
        # before auth's: make the migrated app's permissions first (idempotent).
        from django.contrib.auth.management import create_permissions

        create_permissions(kwargs["app_config"], verbosity=0, using=using)
    # made here if missing (a fresh database, or one flushed), so that it never lacks its rights
    group, _ = Group.objects.using(using).get_or_create(name=Role.ADMIN.value)
    perms = Permission.objects.using(using).filter(content_type__app_label__in=ADMIN_MANAGED_APPS)
    group.permissions.add(*perms)
