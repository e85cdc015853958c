"""`manage.py demo_data`: demo admin, a user per role, a patient and a few slides. Idempotent."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from papreview.accounts.roles import Role
from papreview.accounts.services import user_create, user_set_roles
from papreview.cases.demo import synthetic_pap_bytes
from papreview.cases.errors import DuplicateSlideError
from papreview.cases.models import Patient
from papreview.cases.services import patient_create
from papreview.uploads.services import slide_upload

DEMO_PATIENT = "DEMO-0001"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def _random_password() -> str:
    """16 random URL-safe characters (about 96 bits): passes every password validator."""
    return secrets.token_urlsafe(12)


class Command(BaseCommand):
    help = (
        "Create the demo admin (PAPREVIEW_ADMIN_USER / PAPREVIEW_ADMIN_PASSWORD, default admin "
        "with a random password), one user per role (random passwords), a demo patient and a few "
        "slides: from PAPREVIEW_DATA_DIR/cric/images when present, generated images otherwise. "
        "Passwords are printed once, when the users are created. Safe to re-run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slides", type=int, default=3, help="How many slides (default 3).")

    def handle(self, *args: Any, **options: Any) -> None:
        admin_user = os.environ.get("PAPREVIEW_ADMIN_USER") or "admin"
        admin_password = os.environ.get("PAPREVIEW_ADMIN_PASSWORD") or _random_password()

        admin, created = self._ensure_user(admin_user, admin_password, Role.ADMIN, superuser=True)
        lines = [self._credential_line(admin_user, admin_password, Role.ADMIN, created)]
        for role in (Role.PATHOLOGIST, Role.CYTOTECHNOLOGIST, Role.VIEWER):
            password = _random_password()
            _, made = self._ensure_user(role.value, password, role)
            lines.append(self._credential_line(role.value, password, role, made))

        patient = Patient.objects.filter(identifier=DEMO_PATIENT).first() or patient_create(
            identifier=DEMO_PATIENT, birth_year=1980, notes="Demo patient", created_by=admin
        )
        added, source = self._load_slides(patient, admin, options["slides"])

        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write("Log in with (shown once; change them outside a demo):")
        for line in lines:
            self.stdout.write(f"  {line}")
        if settings.TWO_FACTOR_REQUIRED_ROLES:
            self.stdout.write(
                f"Roles {', '.join(settings.TWO_FACTOR_REQUIRED_ROLES)} set up two-factor sign-in "
                "(an authenticator app) at their first sign-in."
            )
        total = patient.slides.count()
        self.stdout.write(
            f"Patient {patient.identifier}: {total} slide(s), {added} new, from {source}."
        )

    @staticmethod
    def _credential_line(username: str, password: str, role: Role, created: bool) -> str:
        shown = password if created else "(set and shown on the first run)"
        return f"{role.value:<17} username: {username:<17} password: {shown}"

    @staticmethod
    @transaction.atomic
    def _ensure_user(
        username: str, password: str, role: Role, *, superuser: bool = False
    ) -> tuple[User, bool]:
        user = User.objects.filter(username=username).first()
        if user is not None:
            if superuser and not user.is_superuser:
                user.is_superuser = True
                user.save(update_fields=["is_superuser"])
            user_set_roles(user=user, roles=[role])
            return user, False
        try:
            user = user_create(
                username=username, password=password, role=role, is_superuser=superuser
            )
        except ValidationError as exc:  # e.g. a weak PAPREVIEW_ADMIN_PASSWORD
            raise CommandError(f"{username}: {' '.join(exc.messages)}") from exc
        return user, True

    def _load_slides(self, patient: Patient, admin: User, count: int) -> tuple[int, str]:
        images_dir = Path(settings.PAPREVIEW_DATA_DIR) / "cric" / "images"
        files = (
            sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if images_dir.is_dir()
            else []
        )
        added = 0
        if files:
            for path in files[:count]:
                with path.open("rb") as fh:
                    added += self._add(patient, admin, File(fh, name=path.name))
            return added, str(images_dir)
        for i in range(count):
            content = ContentFile(synthetic_pap_bytes(seed=i), name=f"synthetic-field-{i + 1}.png")
            added += self._add(patient, admin, content)
        return added, "generated synthetic images"

    @staticmethod
    def _add(patient: Patient, admin: User, file: File) -> int:
        try:
            slide_upload(patient=patient, file=file, uploaded_by=admin)
        except DuplicateSlideError:
            return 0  # loaded by an earlier run
        return 1
