"""`manage.py uploads_expire [--hours 48]`: remove uploads abandoned mid-file, and their partial
files. Celery beat runs the same service hourly (`papreview.uploads.tasks.uploads_expire`); the
command is for running it by hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from papreview.uploads.services import uploads_expire


class Command(BaseCommand):
    help = (
        "Remove uploads with no chunk for --hours (default UPLOAD_EXPIRE_AFTER_H, 48) and their "
        "partial files."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hours", type=float, default=settings.UPLOAD_EXPIRE_AFTER_H)

    def handle(self, *args: Any, **options: Any) -> None:
        removed = uploads_expire(older_than=timedelta(hours=options["hours"]))
        self.stdout.write(f"Removed {removed} upload(s) idle for {options['hours']:g} h or more.")
