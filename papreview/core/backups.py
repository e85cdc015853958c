"""Backups: the database and the media files in one archive, with a manifest of checksums.

Archive (`.tar.gz`) layout::

    manifest.json           format, time, database vendor, migrations, every member's sha256
    database.dump           PostgreSQL: `pg_dump --format=custom` (restored with pg_restore)
    database.sqlite3        SQLite: a consistent copy made with `VACUUM INTO`
    media/<path>            every file under MEDIA_ROOT (local storage)

`backup_create` writes to a temporary file next to the target and renames it into place, so a
failed backup never leaves a half archive under the final name. `backup_restore` checks every
checksum before it touches the database or the media folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connections
from django.utils import timezone

from inference.data.leaks import file_sha256
from papreview.core.exceptions import ApplicationError

FORMAT = "papreview-backup/1"
MANIFEST = "manifest.json"


class BackupError(ApplicationError):
    code = "backup_failed"


def _pg_env(db: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    return env


def _pg_args(db: dict[str, Any]) -> list[str]:
    args: list[str] = []
    if db.get("HOST"):
        args += ["--host", str(db["HOST"])]
    if db.get("PORT"):
        args += ["--port", str(db["PORT"])]
    if db.get("USER"):
        args += ["--username", str(db["USER"])]
    return args


def _run(cmd: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{Path(cmd[0]).name} failed: {result.stderr.strip()[-2000:]}")


def _dump_database(db: dict[str, Any], vendor: str, out_dir: Path) -> Path:
    if vendor == "postgresql":
        target = out_dir / "database.dump"
        _run(
            [
                shutil.which("pg_dump") or "pg_dump",
                *_pg_args(db),
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                "--file",
                str(target),
                str(db["NAME"]),
            ],
            _pg_env(db),
        )
        return target
    if vendor == "sqlite":
        target = out_dir / "database.sqlite3"
        with sqlite3.connect(str(db["NAME"])) as conn:
            conn.execute("VACUUM INTO ?", (str(target),))
        return target
    raise BackupError(f"Backups of a {vendor} database are not supported.")


def _media_files(media_root: Path) -> Iterator[Path]:
    if not media_root.is_dir():
        return
    for path in sorted(media_root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def _migrations(alias: str) -> dict[str, str]:
    from django.db.migrations.recorder import MigrationRecorder

    latest: dict[str, str] = {}
    for app, name in MigrationRecorder(connections[alias]).applied_migrations():
        latest[app] = max(latest.get(app, ""), name)
    return dict(sorted(latest.items()))


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: dict[str, Any]


def backup_create(*, output: Path, media_root: Path | None, alias: str = "default") -> BackupResult:
    """Dump the database and copy the media files into the archive `output`."""
    connection = connections[alias]
    db = connection.settings_dict
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="papreview-backup-", dir=output.parent) as tmp:
        work = Path(tmp)
        dump = _dump_database(db, connection.vendor, work)
        members: dict[str, dict[str, Any]] = {
            dump.name: {"sha256": file_sha256(dump), "size": dump.stat().st_size}
        }
        media = list(_media_files(media_root)) if media_root is not None else []
        for path in media:
            rel = path.relative_to(media_root).as_posix()  # type: ignore[arg-type]
            members[f"media/{rel}"] = {"sha256": file_sha256(path), "size": path.stat().st_size}
        manifest = {
            "format": FORMAT,
            "created_at": timezone.now().isoformat(),
            "database": {"vendor": connection.vendor, "name": str(db["NAME"]), "file": dump.name},
            "migrations": _migrations(alias),
            "media_files": len(media),
            "members": members,
        }
        manifest_path = work / MANIFEST
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        partial = work / (output.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(manifest_path, arcname=MANIFEST)
            tar.add(dump, arcname=dump.name)
            for path in media:
                tar.add(path, arcname=f"media/{path.relative_to(media_root).as_posix()}")  # type: ignore[arg-type]
        partial.replace(output)
    return BackupResult(path=output, manifest=manifest)


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.extractfile(MANIFEST)
    except KeyError as exc:
        raise BackupError("This is not a PapReview backup: it has no manifest.json.") from exc
    if member is None:
        raise BackupError("This is not a PapReview backup: manifest.json is not a file.")
    manifest: dict[str, Any] = json.loads(member.read())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"Unknown backup format {manifest.get('format')!r}; expected {FORMAT}.")
    return manifest


def backup_verify(archive: Path, into: Path) -> dict[str, Any]:
    """Extract the archive into `into` and check every member against the manifest."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            manifest = _read_manifest(tar)
            tar.extractall(into, filter="data")  # no absolute paths, links out or devices
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{archive}: not a readable backup archive ({exc}).") from exc
    expected: dict[str, dict[str, Any]] = manifest["members"]
    found = {p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file()} - {MANIFEST}
    if found != set(expected):
        extra, missing = sorted(found - set(expected)), sorted(set(expected) - found)
        raise BackupError(
            f"The archive does not match its manifest: extra {extra}, missing {missing}."
        )
    for name, meta in expected.items():
        if file_sha256(into / name) != meta["sha256"]:
            raise BackupError(
                f"Checksum mismatch for {name}: the backup is damaged. Nothing was restored."
            )
    return manifest


def backup_restore(
    *, archive: Path, database: dict[str, Any], vendor: str, media_root: Path | None
) -> dict[str, Any]:
    """Restore the archive into `database` (a Django DATABASES entry) and `media_root`.

    Everything is verified first. PostgreSQL: pg_restore --clean --if-exists in one transaction
    (the target's tables are replaced). SQLite: the file is replaced. Media: the folder is
    replaced by the archive's files; the previous folder is kept next to it as
    `<media>.before-restore-<time>`.
    """
    archive = archive.resolve()
    with tempfile.TemporaryDirectory(prefix="papreview-restore-") as tmp:
        work = Path(tmp)
        manifest = backup_verify(archive, work)
        if manifest["database"]["vendor"] != vendor:
            raise BackupError(
                f"The backup is of a {manifest['database']['vendor']} database; the target is "
                f"{vendor}."
            )
        dump = work / manifest["database"]["file"]
        if vendor == "postgresql":
            _run(
                [
                    shutil.which("pg_restore") or "pg_restore",
                    *_pg_args(database),
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--no-privileges",
                    "--single-transaction",
                    "--exit-on-error",
                    "--dbname",
                    str(database["NAME"]),
                    str(dump),
                ],
                _pg_env(database),
            )
        else:
            target = Path(str(database["NAME"]))
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".restore")
            shutil.copyfile(dump, partial)
            partial.replace(target)
        if media_root is not None:
            media_root = media_root.resolve()
            incoming = work / "media"
            incoming.mkdir(exist_ok=True)
            staged = media_root.with_name(media_root.name + ".restoring")
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(incoming, staged)
            if media_root.exists():
                stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
                media_root.rename(media_root.with_name(f"{media_root.name}.before-restore-{stamp}"))
            staged.rename(media_root)
    return manifest
