"""Create (or update) the PostgreSQL role the application runs as, apart from the role that owns
the tables and runs the migrations: it may read and write every table, but only INSERT into the
audit table (no UPDATE, DELETE or TRUNCATE, and as it owns nothing it cannot drop the
append-only triggers either).

    manage.py db_runtime_role --role papreview_app --password-env PAPREVIEW_APP_DB_PASSWORD

Run it as the owner after every `migrate` (new tables get their grants), then point the web
processes and workers at the runtime role (`DATABASE_URL`) and keep the owner's URL for
migrations only. See SECURITY.md.
"""

from __future__ import annotations

import os
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from psycopg import sql

AUDIT_TABLE = "audit_auditevent"
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Command(BaseCommand):
    help = "Create or update the database role the app runs as (insert-only on the audit table)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--role", required=True, help="role name, e.g. papreview_app")
        parser.add_argument(
            "--password-env",
            default="",
            help="environment variable holding its password (none: the role cannot log in)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("db_runtime_role is for PostgreSQL (SQLite has no roles).")
        role = options["role"]
        if not ROLE_NAME.match(role):
            raise CommandError(f"{role!r} is not a plain role name (a-z, 0-9, _).")
        password = os.environ.get(options["password_env"], "") if options["password_env"] else ""
        if options["password_env"] and not password:
            raise CommandError(f"{options['password_env']} is empty or not set.")
        name = sql.Identifier(role)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            login = (
                sql.SQL("LOGIN PASSWORD {}").format(sql.Literal(password))
                if password
                else (sql.SQL("NOLOGIN"))
            )
            verb = "ALTER" if cursor.fetchone() else "CREATE"
            cursor.execute(
                sql.SQL(verb + " ROLE {} {}").format(name, login).as_string(cursor.connection)
            )
            for statement in (
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(connection.settings_dict["NAME"]), name
                ),
                sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name),
                sql.SQL(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
                ).format(name),
                sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(name),
                sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(
                    sql.Identifier(AUDIT_TABLE), name
                ),
            ):
                cursor.execute(statement.as_string(cursor.connection))
        self.stdout.write(
            f"Role {role}: reads and writes every table, only inserts into {AUDIT_TABLE}."
        )
