"""Resident memory of one gunicorn worker after mixed requests (issue 15, item 4; prints figures).

A private PostgreSQL (migrated) and Redis serve `gunicorn papreview.wsgi` with ONE worker
(gthread, 4 threads) and production-like settings (DEBUG off). Seeded: an admin with a token and a
session, a field image (JPEG) and a pyramidal TIFF whole-slide image, each with 200 cells. Then
`--requests` (100) requests cycle through pages (queue, review page, admin changelists), the API
(slides, cells, runs), Deep Zoom descriptors and tiles at several levels, and cell crops.

Prints the worker's RSS (VmRSS and VmHWM from /proc) after start-up, after the first request and
after all of them, whether torch is loaded in it (its memory maps name libtorch), and the status
codes seen; exits 1 when any request failed or the RSS is above `--target-mb` (250).

    .venv/bin/python benchmarks/web_memory.py [--requests 100] [--target-mb 250]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from testkit.stack import AppServer, bench_app_env, run_script  # noqa: E402

SEED = r"""
import json, sys
import django
django.setup()
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.authtoken.models import Token
from inference.synthetic import write_pyramidal_tiff
from papreview.accounts.roles import Role
from papreview.accounts.services import user_create
from papreview.cases.demo import synthetic_pap_bytes
from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.cases.services import slide_create
from testkit.fixtures import make_cells

for role in Role:
    Group.objects.get_or_create(name=role.value)
admin = user_create(username="bench-admin", password=None, role=Role.ADMIN)
admin.is_staff = admin.is_superuser = True
admin.save()
patient = Patient.objects.create(identifier="MEM-1")
field = slide_create(patient=patient, file=SimpleUploadedFile(
    "field.jpg", synthetic_pap_bytes(seed=1, fmt="JPEG")), original_filename="field.jpg")
wsi_path = write_pyramidal_tiff(__import__("pathlib").Path(sys.argv[1]) / "wsi.tiff",
                                6000, 4000, levels=4, mpp=0.25)
wsi = slide_create(patient=patient, file=SimpleUploadedFile("wsi.tiff", wsi_path.read_bytes()),
                   original_filename="wsi.tiff")
out = {"token": Token.objects.get_or_create(user=admin)[0].key, "slides": []}
for slide in (field, wsi):
    Slide.objects.filter(pk=slide.pk).update(status=SlideStatus.ANALYSED, triage_class="HSIL")
    cells = make_cells(slide, 200, seed=slide.pk)
    out["slides"].append({"id": slide.pk, "w": slide.width, "h": slide.height,
                          "cells": [c.pk for c in cells[:40]]})
client = Client()
client.force_login(admin)
name = settings.SESSION_COOKIE_NAME
out["session"] = f"{name}={client.cookies[name].value}"
print(json.dumps(out))
"""


def _worker_pids(master: int) -> list[int]:
    result = subprocess.run(
        ["pgrep", "-P", str(master)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in result.stdout.split()]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _has_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def _urls(seeded: dict) -> list[tuple[str, str]]:
    """(kind, path): pages with the session, everything under /api/ with the token."""
    import math

    urls: list[tuple[str, str]] = []
    for s in seeded["slides"]:
        sid = s["id"]
        top = math.ceil(math.log2(max(s["w"], s["h"])))
        urls += [("page", f"/slides/{sid}/"), ("api", f"/api/slides/{sid}/"),
                 ("api", f"/api/slides/{sid}/cells/"), ("api", f"/api/slides/{sid}/runs/"),
                 ("api", f"/api/slides/{sid}/deepzoom.dzi")]  # fmt: skip
        for level in (top - 5, top - 3, top - 1, top):
            cols = math.ceil(math.ceil(s["w"] / 2 ** (top - level)) / 254)
            for col in range(min(3, cols)):
                urls.append(("api", f"/api/slides/{sid}/deepzoom_files/{level}/{col}_0.jpeg"))
        urls += [("api", f"/api/cells/{c}/crop/?v=1") for c in s["cells"][:8]]
    urls += [("page", "/"), ("page", "/admin/"), ("page", "/admin/cases/slide/"),
             ("page", "/admin/analysis/analysisrun/"), ("page", "/models/"),
             ("page", "/healthz"), ("api", "/api/slides/"),
             ("api", "/api/model-versions/")]  # fmt: skip
    return urls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--target-mb", type=float, default=250.0)
    args = parser.parse_args()

    server: AppServer | None = None
    with bench_app_env("papreview-mem-media-") as (env, media, _pg):
        try:
            seeded = run_script(SEED, str(media), env=env)
            server = AppServer(env, workers=1, threads=4)
            (worker,) = _worker_pids(server.proc.pid)
            time.sleep(1.0)
            start_kb = _status_kb(worker, "VmRSS")
            session = requests.Session()
            api_headers = {"Authorization": f"Token {seeded['token']}"}
            page_headers = {"Cookie": seeded["session"]}
            urls = _urls(seeded)
            codes: Counter[int] = Counter()
            failed: list[str] = []
            first_kb = 0
            t0 = time.monotonic()
            for i in range(args.requests):
                kind, url = urls[i % len(urls)]
                headers = api_headers if kind == "api" else page_headers
                response = session.get(server.base_url + url, headers=headers, timeout=60)
                codes[response.status_code] += 1
                if response.status_code != 200:
                    failed.append(f"{response.status_code} {url}")
                if i == 0:
                    first_kb = _status_kb(worker, "VmRSS")
            elapsed = time.monotonic() - t0
            rss_kb, hwm_kb = _status_kb(worker, "VmRSS"), _status_kb(worker, "VmHWM")
            torch = _has_torch(worker)
            print(f"gunicorn: 1 worker (gthread, 4 threads), pid {worker}, DEBUG off")
            print(
                f"requests            {args.requests} in {elapsed:.1f} s"
                f" ({len(urls)} distinct URLs)"
            )
            print(f"status codes        {dict(sorted(codes.items()))}")
            print(f"worker RSS start    {start_kb / 1024:.0f} MB")
            print(f"worker RSS 1st req  {first_kb / 1024:.0f} MB")
            print(f"worker RSS after    {rss_kb / 1024:.0f} MB (peak {hwm_kb / 1024:.0f} MB)")
            print(f"torch in worker     {'yes' if torch else 'no'}")
            print(f"target              < {args.target_mb:.0f} MB")
            for problem in failed[:5]:
                print(f"  failed: {problem}")
            if failed:
                print("server log (end):\n" + server.output()[-4000:])
            return 0 if not failed and rss_kb / 1024 < args.target_mb and not torch else 1
        finally:
            if server is not None:
                server.close()


if __name__ == "__main__":
    sys.exit(main())
