"""Tile server benchmark (issue 15, item 7; prints figures, not a test).

A private PostgreSQL (migrated) and Redis serve `gunicorn papreview.wsgi` (gthread, production-like
settings, DEBUG off); seeded: a pyramidal TIFF whole slide (`--size`, 4 levels) and a token.
1. One client, keep-alive, token auth: `--requests` Deep Zoom tiles in sequence, each a tile not
   asked before (every level, row-major): p50 / p95 / p99 latency. Target p95 < 10 ms.
2. Saturation: `--clients` threads, each with its own keep-alive connection, request random tiles
   of the three highest-resolution levels for `--seconds`: tiles/s. Target >= 400 on 2 cores.
   The load generator shares the 2 cores: `--client http` (http.client, default) costs the
   server less CPU than `--client requests` (the client of the first measurement, 219 tiles/s).
Also prints the render time of one tile inside the process (no HTTP) for the same tiles. A tile
request costs one query (the token with its user and roles); the slide's facts are cached.

    .venv/bin/python benchmarks/tile_server.py [--workers 2] [--threads 4] [--clients 16]
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from testkit.stack import AppServer, bench_app_env, run_script  # noqa: E402

SEED = r"""
import json, sys, time
from pathlib import Path
import django
django.setup()
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from inference.synthetic import write_pyramidal_tiff
from papreview.accounts.roles import Role
from papreview.accounts.services import user_create
from papreview.cases.models import Patient
from papreview.cases.services import slide_create
from papreview.imaging.selectors import deepzoom_tile, opened_slide

size = int(sys.argv[2])
for role in Role:
    Group.objects.get_or_create(name=role.value)
user = user_create(username="tiles", password=None, role=Role.PATHOLOGIST)
path = write_pyramidal_tiff(Path(sys.argv[1]) / "wsi.tiff", size, size * 3 // 4, levels=4,
                            mpp=0.25)
slide = slide_create(patient=Patient.objects.create(identifier="TILES"),
                     file=SimpleUploadedFile("wsi.tiff", path.read_bytes()),
                     original_filename="wsi.tiff")
dz = opened_slide(slide).deepzoom
top = dz.level_count - 1
cols, rows = dz.level_tiles[top]
t0 = time.perf_counter()
n = 0
for r in range(min(rows, 10)):
    for c in range(min(cols, 10)):
        deepzoom_tile(slide=slide, level=top, col=c, row=r)
        n += 1
render_ms = (time.perf_counter() - t0) * 1000 / n
print(json.dumps({"token": Token.objects.get_or_create(user=user)[0].key, "slide": slide.pk,
                  "levels": [list(dz.level_tiles[i]) for i in range(dz.level_count)],
                  "render_ms": render_ms}))
"""


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by process `root` and its live descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=16_000, help="level-0 width of the slide")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--client",
        choices=["http", "requests"],
        default="http",
        help="saturation load generator: http.client (light) or requests (as first measured)",
    )
    args = parser.parse_args()

    server: AppServer | None = None
    with bench_app_env("papreview-tiles-") as (env, media, pg):
        try:
            seeded = run_script(SEED, str(media), str(args.size), env=env)
            server = AppServer(env, workers=args.workers, threads=args.threads)
            port = server.port
            base = f"{server.base_url}/api/slides/{seeded['slide']}/deepzoom_files"
            headers = {"Authorization": f"Token {seeded['token']}"}
            levels = seeded["levels"]
            top = len(levels) - 1
            tiles = [(lv, c, r) for lv in range(len(levels)) for r in range(levels[lv][1])
                 for c in range(levels[lv][0])]  # fmt: skip
            for _ in range(args.workers * 4):  # every worker loaded and the slide opened
                requests.get(f"{base}/{top}/0_0.jpeg", headers=headers, timeout=60)

            # 1. one client, tiles not asked before (no browser cache, no server cache)
            session = requests.Session()
            ms: list[float] = []
            for level, col, row in tiles[-args.requests :]:
                t0 = time.perf_counter()
                response = session.get(
                    f"{base}/{level}/{col}_{row}.jpeg", headers=headers, timeout=60
                )
                ms.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    print(f"tile {level}/{col}_{row}: {response.status_code}")
                    return 1

            # 2. saturation
            hot = [t for t in tiles if t[0] >= top - 2]
            done, errors = [0] * args.clients, [0] * args.clients
            stop = time.monotonic() + args.seconds

            def client(i: int) -> None:
                rng = random.Random(i)
                if args.client == "requests":
                    s = requests.Session()
                    while time.monotonic() < stop:
                        level, col, row = rng.choice(hot)
                        r = s.get(f"{base}/{level}/{col}_{row}.jpeg", headers=headers, timeout=60)
                        done[i] += r.status_code == 200
                        errors[i] += r.status_code != 200
                    return
                # http.client: the same keep-alive requests at a fifth of requests' CPU per call, so
                # the load generator (on the same 2 cores) takes less from the server it measures.
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                path = f"/api/slides/{seeded['slide']}/deepzoom_files"
                while time.monotonic() < stop:
                    level, col, row = rng.choice(hot)
                    conn.request("GET", f"{path}/{level}/{col}_{row}.jpeg", headers=headers)
                    response = conn.getresponse()
                    response.read()
                    done[i] += response.status == 200
                    errors[i] += response.status != 200
                conn.close()

            pg_pid = int((pg.data / "postmaster.pid").read_text().split()[0])
            cpu0 = (tree_cpu_s(server.proc.pid), tree_cpu_s(pg_pid), time.process_time())
            t0 = time.monotonic()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - t0
            cpu1 = (tree_cpu_s(server.proc.pid), tree_cpu_s(pg_pid), time.process_time())
            per = [(b - a) * 1000 / max(1, sum(done)) for a, b in zip(cpu0, cpu1, strict=True)]
            print(f"slide               {args.size} x {args.size * 3 // 4} px, {len(tiles)} tiles")
            print(f"gunicorn            {args.workers} workers x {args.threads} threads (gthread)")
            print(f"render in process   {seeded['render_ms']:.2f} ms per full-resolution tile")
            print(
                f"one client          p50 {statistics.median(ms):.2f}"
                f" / p95 {percentile(ms, 95):.2f} / p99 {percentile(ms, 99):.2f} ms"
                f" over {len(ms)} tiles (target p95 < 10 ms)"
            )
            print(
                f"saturation          {sum(done) / elapsed:.0f} tiles/s with {args.clients} clients"
                f" ({args.client})"
                f" ({sum(errors)} errors; target >= 400)"
            )
            cores = os.cpu_count() or 1
            print(
                f"CPU per tile          gunicorn {per[0]:.2f} ms, PostgreSQL {per[1]:.2f} ms, load "
                f"generator {per[2]:.2f} ms: {cores} idle cores would serve at most "
                f"{cores * 1000 / sum(per):.0f} tiles/s with this load generator, "
                f"{cores * 1000 / (per[0] + per[1]):.0f} without it (load average "
                f"{os.getloadavg()[0]:.2f}: other work shares the cores)"
            )
            return 0 if not sum(errors) else 1
        finally:
            if server is not None:
                server.close()


if __name__ == "__main__":
    sys.exit(main())
