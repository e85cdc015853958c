"""Run by tests/core/test_db_pool.py in a subprocess: THREADS threads each run a slow query
through Django (settings from the environment, DB_POOL_MAX_SIZE set) while a monitor counts this
process's server connections (by application name). Prints JSON: peak connections, queries done."""

from __future__ import annotations

import json
import os
import threading
import time

import django

THREADS = 8


def main() -> None:
    django.setup()
    import psycopg
    from django.conf import settings
    from django.db import connection

    app = os.environ["PGAPPNAME"]
    db = settings.DATABASES["default"]
    peak = 0
    done: list[int] = []
    stop = threading.Event()

    def monitor() -> None:
        nonlocal peak
        dsn = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={db['NAME']}"
        with psycopg.connect(dsn, application_name="pool-monitor", autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app]
                ).fetchone()
                peak = max(peak, int(row[0]) if row else 0)
                time.sleep(0.02)

    def query() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(0.3)")
            done.append(1)
        finally:
            connection.close()  # back to the pool

    watcher = threading.Thread(target=monitor)
    watcher.start()
    threads = [threading.Thread(target=query) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.1)
    stop.set()
    watcher.join()
    print(json.dumps({"peak": peak, "done": len(done), "pool": db["OPTIONS"].get("pool")}))


if __name__ == "__main__":
    main()
