"""`createsuperuser` with the password rules in non-interactive mode too.

Django checks AUTH_PASSWORD_VALIDATORS only when it asks for the password; with `--noinput` and
DJANGO_SUPERUSER_PASSWORD it took `1234`. Here that password is checked first (the username and
email from the options or DJANGO_SUPERUSER_* for the similarity rule)."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth.management.commands import createsuperuser
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError


class Command(createsuperuser.Command):
    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if not options.get("interactive") and password is not None:
            username = options.get("username") or os.environ.get("DJANGO_SUPERUSER_USERNAME", "")
            email = options.get("email") or os.environ.get("DJANGO_SUPERUSER_EMAIL", "")
            try:
                validate_password(password, User(username=username or "", email=email or ""))
            except ValidationError as exc:
                raise CommandError("DJANGO_SUPERUSER_PASSWORD: " + " ".join(exc.messages)) from exc
        super().handle(*args, **options)
