"""The Django admin: users, roles (groups), API tokens and two-factor devices are for superusers
only. Lab administrators manage users on the users page (papreview.accounts.views), which offers
the app's roles, never Django's groups, staff flag or permission matrix."""

from __future__ import annotations

from typing import Any

# Registered first (this app comes before them in INSTALLED_APPS), then replaced below.
import django.contrib.auth.admin  # noqa: F401
import django_otp.plugins.otp_static.admin
import django_otp.plugins.otp_totp.admin  # noqa: F401
import rest_framework.authtoken.admin  # noqa: F401
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.http import HttpRequest
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token, TokenProxy


class SuperuserOnly:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return bool(request.user.is_superuser)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)


for _model in (User, Group, Token, TokenProxy, TOTPDevice, StaticDevice):
    if admin.site.is_registered(_model):
        _base = type(admin.site.get_model_admin(_model))
        admin.site.unregister(_model)
        admin.site.register(
            _model, type(f"SuperuserOnly{_base.__name__}", (SuperuserOnly, _base), {})
        )
