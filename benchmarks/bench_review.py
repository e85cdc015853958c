"""Benchmark of the slide review page and the cell-edit API (prints figures; not a test).

1. A whole-slide image (pyramidal TIFF) with 10,000 cells: the time from navigation start until
   the page has drawn the cells (`window.__cellsDrawnAt`, set after the first overlay draw with
   the cells loaded) in Debian's headless Chromium; then the time of one full overlay redraw with
   every cell in view (the cost of a pan/zoom frame). Target: cells drawn < 1.5 s.
2. Cell-edit API latency: 20 concurrent clients (threads, keep-alive sessions, token auth) PATCH
   cells (a relabel each, with the cell's version) against gunicorn on 127.0.0.1 and PostgreSQL.
   Target: p95 < 50 ms. Two modes, both printed:
   - closed loop: each client sends its next PATCH as soon as the last one is answered (no think
     time). With more clients than CPUs this measures the server's saturation throughput, and the
     latency it prints is mostly queueing behind the other clients.
   - paced: each client edits at a fixed rate (one PATCH every --interval seconds, the clients'
     phases spread evenly), for --duration seconds: 20 reviewers working at once. Latency is
     measured from the scheduled send time, so a server that falls behind is not hidden.

Run (PostgreSQL must be reachable; the benchmark's rows are deleted at the end):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/papreview_web \\
        .venv/bin/python benchmarks/bench_review.py [--cells 10000] [--clients 20] [--edits 40]
        [--interval 0.5] [--duration 20] [--skip-page]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from inference.types import BETHESDA_CLASSES  # noqa: E402 (after the path insert)

CLASSES = list(BETHESDA_CLASSES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def setup_data(
    media: Path, n_cells: int, width: int, height: int, n_clients: int, per_client_cells: int
) -> dict[str, Any]:
    """A pathologist, a patient, a stored WSI slide marked analysed with its cells, and one more
    slide per API client (same stored file) for the one-slide-per-reviewer case."""
    import random

    from django.core.files import File
    from django.core.files.storage import default_storage
    from rest_framework.authtoken.models import Token

    from inference.slides import probe_slide
    from inference.synthetic import write_pyramidal_tiff
    from papreview.accounts.roles import Role
    from papreview.accounts.services import user_create
    from papreview.analysis.models import AnalysisRun, RunStatus
    from papreview.cases.models import Patient, Slide, SlideStatus
    from papreview.review.models import Cell

    tag = uuid.uuid4().hex[:8]
    password = secrets.token_urlsafe(18)  # unlike the username (the password rules)
    user = user_create(username=f"bench-{tag}", password=password, role=Role.PATHOLOGIST)
    token, _ = Token.objects.get_or_create(user=user)
    patient = Patient.objects.create(identifier=f"BENCH-{tag}")
    t0 = time.perf_counter()
    path = write_pyramidal_tiff(media / "bench.tiff", width, height, levels=5, mpp=0.25)
    info = probe_slide(path)
    with path.open("rb") as fh:
        stored = default_storage.save(f"slides/bench/{tag}/bench.tiff", File(fh))
    # The row is created directly (not through slide_create) so that no analysis is queued.
    slide = Slide.objects.create(
        patient=patient,
        file=stored,
        original_filename="bench.tiff",
        format=info.format,
        kind=info.kind.value,
        width=info.width,
        height=info.height,
        mpp=info.mpp,
        level_count=info.level_count,
        sha256=uuid.uuid4().hex + uuid.uuid4().hex,
        status=SlideStatus.ANALYSED,
        triage_class="HSIL",
        triage_score=4.9,
    )
    run = AnalysisRun.objects.create(slide=slide, status=RunStatus.SUCCEEDED, progress=100)
    rng = random.Random(0)
    cells = []
    for _ in range(n_cells):
        w, h = rng.randint(30, 90), rng.randint(30, 90)
        cls = rng.choices(CLASSES, weights=[55, 12, 10, 8, 10, 5])[0]
        top = rng.uniform(0.35, 0.99)
        probs = {c: round(top if c == cls else (1 - top) / 5, 4) for c in CLASSES}
        cells.append(
            Cell(
                slide=slide,
                run=run,
                x=rng.randint(0, width - w),
                y=rng.randint(0, height - h),
                width=w,
                height=h,
                predicted_class=cls,
                current_class=cls,
                probabilities=probs,
                detection_score=round(rng.uniform(0.2, 1.0), 3),
            )
        )
    Cell.objects.bulk_create(cells, batch_size=2000)
    extra_slides = []
    for k in range(n_clients):
        other = Slide.objects.create(
            patient=patient,
            file=stored,
            original_filename=f"bench-{k}.tiff",
            format=info.format,
            kind=info.kind.value,
            width=info.width,
            height=info.height,
            sha256=uuid.uuid4().hex + uuid.uuid4().hex,
            status=SlideStatus.ANALYSED,
        )
        other_run = AnalysisRun.objects.create(slide=other, status=RunStatus.SUCCEEDED)
        Cell.objects.bulk_create(
            [
                Cell(
                    slide=other,
                    run=other_run,
                    x=rng.randint(0, width - 60),
                    y=rng.randint(0, height - 60),
                    width=50,
                    height=50,
                    predicted_class="HSIL",
                    current_class="HSIL",
                    probabilities={"HSIL": 0.9, "NILM": 0.1},
                    detection_score=0.8,
                )
                for _ in range(per_client_cells)
            ]
        )
        extra_slides.append(other)
    print(
        f"data: slide {slide.pk} {width} x {height} px ({info.format}, {info.level_count} levels), "
        f"{n_cells} cells, made in {time.perf_counter() - t0:.1f} s"
    )
    return {
        "user": user,
        "password": password,
        "token": token.key,
        "slide": slide,
        "patient": patient,
        "cell_ids": list(Cell.objects.filter(slide=slide).values_list("id", flat=True)),
        "extra_slides": extra_slides,
        "per_slide_cells": [
            list(Cell.objects.filter(slide=s).values_list("id", flat=True)) for s in extra_slides
        ],
    }


def start_server(port: int, env: dict[str, str], workers: int, threads: int) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "gunicorn", "papreview.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
        "--worker-class", "gthread" if threads > 1 else "sync", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=2).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("gunicorn did not start")


def bench_page(base: str, data: dict[str, Any], runs: int) -> None:
    from playwright.sync_api import sync_playwright

    from testkit.browser import launch

    slide = data["slide"]
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{base}/accounts/login/")
        page.get_by_label("Username").fill(data["user"].username)
        page.get_by_label("Password").fill(data["password"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        times, loads = [], []
        for i in range(runs):
            page.goto(f"{base}/slides/{slide.pk}/")
            page.wait_for_function("window.__cellsDrawnAt !== undefined", timeout=60_000)
            drawn = page.evaluate("window.__cellsDrawnAt")
            loads.append(page.evaluate("window.__review.cellsLoadMs"))
            n = page.evaluate("window.__review.store.cells.length")
            times.append(drawn)
            label = "cold (first open of the slide by the server)" if i == 0 else "warm"
            print(f"  run {i + 1}: cells drawn at {drawn:.0f} ms ({n} cells; {label})")
        page.wait_for_function("window.__review.viewerOpen === true")
        page.evaluate("window.__review.viewer.viewport.goHome(true)")
        page.wait_for_timeout(1500)
        shot = ROOT / "tests" / "_artifacts" / "review-10000-cells.png"
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot))
        print(f"  screenshot: {shot.relative_to(ROOT)}")
        redraw = page.evaluate(
            """() => { const o = window.__review.overlay; const t = [];
            for (let i = 0; i < 30; i++) { const t0 = performance.now(); o.draw();
              t.push(performance.now() - t0); }
            t.sort((a, b) => a - b); return [t[15], t[28], o.drawnCount]; }"""
        )
        zoomed = page.evaluate(
            """() => { const r = window.__review; const v = r.viewer.viewport;
            v.zoomTo(v.getHomeZoom() * 8, null, true); v.applyConstraints(true);
            const o = r.overlay; const t = [];
            for (let i = 0; i < 30; i++) { const t0 = performance.now(); o.draw();
              t.push(performance.now() - t0); }
            t.sort((a, b) => a - b); return [t[15], o.drawnCount]; }"""
        )
        browser.close()
    print(
        f"cells drawn (navigation start -> first draw with all cells): median "
        f"{statistics.median(times):.0f} ms, warm runs {min(times[1:] or times):.0f}-"
        f"{max(times[1:] or times):.0f} ms, cold {times[0]:.0f} ms (target < 1500 ms)"
    )
    print(f"  of which cell-layer fetch + parse + index: median {statistics.median(loads):.0f} ms")
    print(
        f"overlay redraw, whole slide in view ({redraw[2]} cells drawn): median "
        f"{redraw[0]:.1f} ms, p95 {redraw[1]:.1f} ms; zoomed x8 ({zoomed[1]} cells in view): "
        f"median {zoomed[0]:.2f} ms"
    )


def bench_api(base: str, data: dict[str, Any], per: list[list[int]], label: str) -> None:
    import requests

    clients, edits = len(per), len(per[0])
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(cells: list[int], k: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {data['token']}"
        versions = {}
        for cid in cells[:2]:  # warm the connection
            versions[cid] = session.get(f"{base}/api/cells/{cid}/").json()["version"]
        mine: list[float] = []
        barrier.wait()
        for i, cid in enumerate(cells):
            version = versions.get(cid) or 1
            body = {"version": version, "current_class": CLASSES[(i + k) % len(CLASSES)]}
            t0 = time.perf_counter()
            response = session.patch(f"{base}/api/cells/{cid}/", json=body)
            mine.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                with lock:
                    errors.append(f"{response.status_code} {response.text[:120]}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(per[k], k)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    p50, p95, p99 = (percentile(latencies, q) for q in (0.5, 0.95, 0.99))
    print(
        f"cell-edit API, {label}: {clients} concurrent client(s) x {edits} PATCHes "
        f"({len(latencies)} requests, {len(errors)} errors): "
        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies):.1f} ms; {len(latencies) / wall:.0f} requests/s (target p95 < 50 ms)"
    )
    if errors:
        print("  first errors:", errors[:3])


def bench_api_paced(
    base: str,
    data: dict[str, Any],
    per: list[list[int]],
    label: str,
    interval: float,
    duration: float,
) -> None:
    """Each client PATCHes one of its cells every `interval` seconds for `duration` seconds."""
    import requests

    clients = len(per)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    start: list[float] = []

    def client(cells: list[int], k: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {data['token']}"
        versions = {cid: session.get(f"{base}/api/cells/{cid}/").json()["version"] for cid in cells}
        mine: list[float] = []
        if barrier.wait() == 0:
            start.append(time.perf_counter())
        while not start:
            time.sleep(0.001)
        offset = interval * k / clients  # reviewers do not click in step
        n = int(duration / interval)
        for i in range(n):
            due = start[0] + offset + i * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            cid = cells[i % len(cells)]
            body = {"version": versions[cid], "current_class": CLASSES[(i + k) % len(CLASSES)]}
            response = session.patch(f"{base}/api/cells/{cid}/", json=body)
            mine.append((time.perf_counter() - due) * 1000)  # from the scheduled time
            if response.status_code == 200:
                versions[cid] = response.json()["version"]
            else:
                with lock:
                    errors.append(f"{response.status_code} {response.text[:120]}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(per[k], k)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start[0]
    p50, p95, p99 = (percentile(latencies, q) for q in (0.5, 0.95, 0.99))
    print(
        f"cell-edit API, paced, {label}: {clients} clients x 1 PATCH every {interval:g} s for "
        f"{duration:g} s ({len(latencies)} requests, {len(errors)} errors, "
        f"{len(latencies) / wall:.0f} requests/s offered): p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms (target p95 < 50 ms)"
    )
    if errors:
        print("  first errors:", errors[:3])


def django_for_browser_bench(media_prefix: str) -> Path:
    """Django set up in this process for a page benchmark: production-like settings with the
    page's timing hooks on (off by default), media in a new temporary folder (returned), the
    PostgreSQL database of DATABASE_URL migrated; Playwright's sync API allowed in this thread."""
    media = Path(tempfile.mkdtemp(prefix=media_prefix))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "papreview.settings.base")
    os.environ.setdefault("PAPREVIEW_TEST_HOOKS", "true")
    os.environ["MEDIA_ROOT"] = str(media)
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL to a PostgreSQL database (e.g. .../papreview_web).")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return media


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--edits", type=int, default=40, help="PATCHes per client")
    parser.add_argument("--runs", type=int, default=5, help="page loads")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    parser.add_argument("--width", type=int, default=16_384)
    parser.add_argument("--height", type=int, default=12_288)
    parser.add_argument(
        "--interval", type=float, default=0.5, help="paced mode: seconds between a client's edits"
    )
    parser.add_argument("--duration", type=float, default=20, help="paced mode: seconds")
    parser.add_argument(
        "--skip-page", action="store_true", help="only the cell-edit API (no browser)"
    )
    args = parser.parse_args()

    media = django_for_browser_bench("bench-review-")
    print(f"{os.cpu_count()} CPUs; gunicorn {args.workers} workers x {args.threads} threads")
    data = setup_data(media, args.cells, args.width, args.height, args.clients, args.edits)
    port = free_port()
    env = {**os.environ, "DEBUG": "false", "LOG_LEVEL": "WARNING"}
    server = start_server(port, env, args.workers, args.threads)
    base = f"http://127.0.0.1:{port}"
    try:
        if not args.skip_page:
            bench_page(base, data, args.runs)
        ids = data["cell_ids"]
        bench_api(base, data, [ids[-3 * args.edits :]], "one client alone (baseline)")
        same = [ids[i * args.edits : (i + 1) * args.edits] for i in range(args.clients)]
        bench_api(base, data, same, "all clients on the same slide")
        own = [cells[: args.edits] for cells in data["per_slide_cells"]]
        bench_api(base, data, own, "each client on its own slide")
        print(f"load average (uptime): {os.getloadavg()}")
        paced = (args.interval, args.duration)
        bench_api_paced(base, data, same, "all clients on the same slide", *paced)
        bench_api_paced(base, data, own, "each client on its own slide", *paced)
        print(f"load average (uptime): {os.getloadavg()}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        slide, patient, user = data["slide"], data["patient"], data["user"]
        from papreview.review.models import CellRevision

        for s in [slide, *data["extra_slides"]]:
            CellRevision.objects.filter(cell__slide=s).delete()
            s.delete()
        patient.delete()
        user.delete()
        shutil.rmtree(media, ignore_errors=True)


if __name__ == "__main__":
    main()
