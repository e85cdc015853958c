"""Load benchmark: 50 reviewers editing cells at once for 60 s (prints figures; not a test).

A private PostgreSQL cluster (initdb into a temporary folder, fsync on, migrated with
`manage.py migrate`) and a private Redis serve `gunicorn papreview.wsgi` on 127.0.0.1; every
reviewer is a thread with its own keep-alive session and token, and edits only its own cells,
each PATCH carrying the version it read (as the review page does). Loopback only; the reviewer
count and the duration are fixed by the arguments. Afterwards every acknowledged edit (200) is
looked up in the database (its CellRevision with the same values), and every cell's version must
equal 1 + its revisions.

Prints requests, acknowledged edits, throughput, p50/p95/p99 latency of acknowledged edits,
errors and lost edits; exits 1 when there is any error or lost edit.

    .venv/bin/python benchmarks/load_review.py [--reviewers 50] [--seconds 60] [--workers 4]
        [--proxy]   # through nginx with docker/nginx.conf, as deployed
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from testkit.reviewers import EditLog, lost_edits, percentile, run_reviewers  # noqa: E402
from testkit.stack import (  # noqa: E402
    AppServer,
    NginxProxy,
    PrivatePostgres,
    PrivateRedis,
    app_env,
    seed_reviewers,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reviewers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cells", type=int, default=20, help="cells per reviewer")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="send the reviewers through nginx with docker/nginx.conf, as deployed",
    )
    args = parser.parse_args()

    started = time.monotonic()
    pg = PrivatePostgres(fsync=True)
    redis = PrivateRedis()
    server: AppServer | None = None
    proxy: NginxProxy | None = None
    try:
        subprocess.run(
            ["createdb", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "papreview"],
            check=True,
        )
        url = pg.url("papreview")
        env = app_env(url, redis.url(0), CONN_MAX_AGE="600")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT, env=env, check=True,
        )  # fmt: skip
        seeded = seed_reviewers(env, args.reviewers, args.cells, "load")
        server = AppServer(env, workers=args.workers, threads=args.threads)
        for _ in range(args.workers * 2):  # load the app in every worker before timing
            requests.get(f"{server.base_url}/healthz", timeout=60)
        base_url = server.base_url
        if args.proxy:
            proxy = NginxProxy(server.port)
            base_url = proxy.base_url
        print(
            f"setup {time.monotonic() - started:.0f}s: PostgreSQL :{pg.port} (fsync on), "
            f"gunicorn {args.workers} workers x {args.threads} threads on {server.base_url}, "
            f"{'through nginx ' + base_url + ', ' if proxy else ''}"
            f"{args.reviewers} reviewers x {args.cells} cells"
        )

        log = EditLog()
        t0 = time.monotonic()
        threads = run_reviewers(base_url=base_url, seeded=seeded, seconds=args.seconds, log=log)
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - t0
        lost = lost_edits(url, log)
        ms = [v * 1000 for v in log.latencies]
        total = sum(log.statuses.values())
        errors = len(log.errors) + sum(
            n for code, n in log.statuses.items() if code not in (200, 409, 503)
        )
        print(f"duration            {elapsed:.1f} s")
        print(f"requests            {total} ({dict(sorted(log.statuses.items()))})")
        print(f"acknowledged edits  {len(log.acked)} ({len(log.acked) / elapsed:.1f}/s)")
        print(f"retried (503)       {log.retries}")
        print(
            f"latency p50/p95/p99 {percentile(ms, 50):.1f} / {percentile(ms, 95):.1f} / "
            f"{percentile(ms, 99):.1f} ms (max {max(ms, default=0):.1f})"
        )
        print(f"errors              {errors}")
        print(f"lost edits          {len(lost)}")
        for problem in (log.errors + lost)[:5]:
            print(f"  {problem[:200]}")
        if errors:
            print("server log (end):\n" + server.output()[-6000:])
        return 0 if errors == 0 and not lost else 1
    finally:
        if proxy is not None:
            proxy.close()
        if server is not None:
            server.close()
        redis.close()
        pg.close()


if __name__ == "__main__":
    sys.exit(main())
