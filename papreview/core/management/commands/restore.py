"""manage.py restore: put a backup archive back (database and media), after checking it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from papreview.core.backups import BackupError, backup_restore

VENDORS = {"django.db.backends.postgresql": "postgresql", "django.db.backends.sqlite3": "sqlite"}


class Command(BaseCommand):
    help = (
        "Restore a backup made by `manage.py backup`: every checksum is verified first, then the "
        "database's tables are replaced (pg_restore --clean, one transaction) and the media "
        "folder is replaced (the old one is kept as <media>.before-restore-<time>)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("archive", type=Path)
        parser.add_argument(
            "--database-url",
            help="Restore into this database instead of the configured one (e.g. a scratch one).",
        )
        parser.add_argument("--media-root", type=Path, help="Restore the media files here.")
        parser.add_argument("--no-media", action="store_true", help="Leave the media alone.")
        parser.add_argument(
            "--yes", action="store_true", help="Do not ask before replacing the data."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        archive: Path = options["archive"]
        if not archive.is_file():
            raise CommandError(f"{archive}: no such backup archive.")
        if options["database_url"]:
            database: dict[str, Any] = environ.Env.db_url_config(options["database_url"])
        else:
            database = dict(connections["default"].settings_dict)
        vendor = VENDORS.get(str(database["ENGINE"]))
        if vendor is None:
            raise CommandError(f"Restoring into {database['ENGINE']} is not supported.")
        media_root = None
        if not options["no_media"]:
            media_root = options["media_root"] or Path(settings.MEDIA_ROOT)
        if not options["yes"]:
            answer = input(
                f"Replace the data of database {database['NAME']!r}"
                f"{' and the media folder ' + str(media_root) if media_root else ''}? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("Restore cancelled; nothing was changed.")
        connections.close_all()
        try:
            manifest = backup_restore(
                archive=archive, database=database, vendor=vendor, media_root=media_root
            )
        except BackupError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Restored {archive} (made {manifest['created_at']}): database {database['NAME']}, "
            f"{manifest['media_files']} media file(s)."
        )
