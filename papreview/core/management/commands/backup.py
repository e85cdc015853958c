"""manage.py backup: the database and the media files in one archive with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from papreview.core.backups import BackupError, backup_create


class Command(BaseCommand):
    help = (
        "Write a backup archive (.tar.gz): a database dump (pg_dump, or a copy of the SQLite "
        "file), the media files, and a manifest with each file's SHA-256."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--output",
            type=Path,
            help="Archive to write (default: var/backups/papreview-<time>.tar.gz).",
        )
        parser.add_argument("--no-media", action="store_true", help="Leave the media files out.")
        parser.add_argument("--database", default="default", help="Database alias.")

    def handle(self, *args: Any, **options: Any) -> None:
        output: Path | None = options["output"]
        if output is None:
            stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
            output = Path(settings.ROOT_DIR) / "var" / "backups" / f"papreview-{stamp}.tar.gz"
        media_root = None if options["no_media"] else Path(settings.MEDIA_ROOT)
        try:
            result = backup_create(output=output, media_root=media_root, alias=options["database"])
        except BackupError as exc:
            raise CommandError(exc.message) from exc
        manifest = result.manifest
        self.stdout.write(
            f"Backup written to {result.path}: {manifest['database']['vendor']} database, "
            f"{manifest['media_files']} media file(s), {len(manifest['members'])} checksums."
        )
