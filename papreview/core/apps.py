from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class CoreConfig(AppConfig):
    """Shared pieces: errors, pagination, health check, management commands."""

    name = "papreview.core"
    label = "core"
    verbose_name = "PapReview core"

    def ready(self) -> None:
        embedded_folders_create()


def embedded_folders_create() -> None:
    """Create the folders of the embedded defaults (a SQLite file, the filesystem broker: `var/`
    on a fresh clone) before any process opens them; importing settings writes nothing. Every
    process that uses them sets Django up first: web, `manage.py`, and Celery's worker and beat
    (through Celery's Django fixup)."""
    for database in settings.DATABASES.values():
        name = str(database.get("NAME") or "")
        sqlite = database.get("ENGINE") == "django.db.backends.sqlite3"
        if sqlite and name and not name.startswith((":memory:", "file:")):
            Path(name).parent.mkdir(parents=True, exist_ok=True)
    if getattr(settings, "CELERY_BROKER_IS_FILESYSTEM", False):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if options.get(key):
                Path(options[key]).mkdir(parents=True, exist_ok=True)
