"""Two-factor sign-in with django-otp: a TOTP authenticator app, and recovery codes (a static
device) for when the phone is lost.

* `two_factor_required(user)`: whether the user's roles need it (TWO_FACTOR_REQUIRED_ROLES,
  admin and pathologist by default); anyone may enrol.
* Enrolment: `totp_device_pending` makes (or reuses) an unconfirmed device whose QR code the page
  shows; `totp_device_confirm` checks the first code, confirms the device and makes ten recovery
  codes, which are shown once.
* `two_factor_verify`: a sign-in's code, from the app or a recovery code (each works once).
* `two_factor_reset`: an administrator removes a user's devices (a lost phone); the user enrols
  again at the next sign-in.
"""

from __future__ import annotations

import io
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django_otp import devices_for_user, user_has_device
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from papreview.accounts.roles import ROLE_NAMES, Role, user_roles

RECOVERY_CODES = 10
TOTP_NAME = "Authenticator app"
RECOVERY_NAME = "Recovery codes"


def two_factor_required(user: Any) -> bool:
    required = {Role(r) for r in settings.TWO_FACTOR_REQUIRED_ROLES if r in ROLE_NAMES}
    return bool(user_roles(user) & required)


def two_factor_enabled(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and user_has_device(user, confirmed=True)


def totp_device_pending(*, user: User) -> TOTPDevice:
    """The user's unconfirmed authenticator device, made when there is none."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()
    return device or TOTPDevice.objects.create(user=user, name=TOTP_NAME, confirmed=False)


def totp_qr_svg(device: TOTPDevice) -> str:
    """The device's otpauth:// URL as an inline SVG QR code (no image request, no script)."""
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    out = io.BytesIO()
    image.save(out)
    svg = out.getvalue().decode()
    return svg[svg.index("<svg") :]  # without the XML declaration


def totp_secret_text(device: TOTPDevice) -> str:
    """The secret in base32, in groups of four, for typing into an app by hand."""
    from base64 import b32encode

    secret = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@transaction.atomic
def totp_device_confirm(*, user: User, device: TOTPDevice, code: str) -> list[str] | None:
    """Confirm the device with its first code. Returns the new recovery codes (shown once), or
    None when the code is wrong."""
    from papreview.audit.models import AuditAction
    from papreview.audit.services import audit_record

    if device.user_id != user.pk or not device.verify_token(_digits(code)):
        return None
    TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    codes = _recovery_codes_new(user=user)
    audit_record(action=AuditAction.TWO_FACTOR_ENROLLED, actor=user, target=user)
    return codes


def recovery_codes_regenerate(*, user: User) -> list[str]:
    from papreview.audit.models import AuditAction
    from papreview.audit.services import audit_record

    with transaction.atomic():
        codes = _recovery_codes_new(user=user)
        audit_record(action=AuditAction.RECOVERY_CODES_NEW, actor=user, target=user)
    return codes


def _recovery_codes_new(*, user: User) -> list[str]:
    device, _ = StaticDevice.objects.get_or_create(
        user=user, name=RECOVERY_NAME, defaults={"confirmed": True}
    )
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=c) for c in codes)
    return codes


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def two_factor_verify(*, user: User, code: str) -> Device | None:
    """The device that accepts this sign-in code (app code or an unused recovery code), or None.
    Wrong codes slow the device down (django-otp's throttling)."""
    code = code.strip().replace(" ", "")
    if not code:
        return None
    with transaction.atomic():
        for device in devices_for_user(user, confirmed=True, for_verify=True):
            token = _digits(code) if isinstance(device, TOTPDevice) else code.lower()
            if device.verify_token(token):
                return device
    return None


@transaction.atomic
def two_factor_reset(*, user: User) -> int:
    """Remove every device of the user (they enrol again at the next sign-in); their sessions end.
    Returns how many devices."""
    from papreview.accounts.sessions import user_sessions_end
    from papreview.audit.models import AuditAction
    from papreview.audit.services import audit_record

    count = 0
    for model in (TOTPDevice, StaticDevice):
        deleted, _ = model.objects.filter(user=user).delete()
        count += deleted
    user_sessions_end(user=user)
    audit_record(action=AuditAction.TWO_FACTOR_RESET, target=user, data={"user": user.username})
    return count


def _digits(code: str) -> str:
    return "".join(ch for ch in code if ch.isdigit())
