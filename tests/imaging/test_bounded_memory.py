"""Bounded memory in the web tier (issue 15, item 3).

A hostile tiled TIFF (50 KB declaring 20000 x 20000 px, one blank tile repeated) is refused at
upload now; one stored before that check existed (a row made directly) is served by a fresh web
process: tiles at every zoom and the crop of a cell whose box is as large as the slide. The
process's peak resident memory (ru_maxrss) may grow by less than 200 MB over the whole run; it
grew by about 4 GB when low zoom tiles and crops read the full-resolution image.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image
from rest_framework.authtoken.models import Token

from papreview.cases.models import Slide, SlideStatus
from papreview.imaging.regions import READ_CHUNK, PyramidImage, read_scaled
from papreview.review.models import Cell, ReviewStatus
from testkit.images import hostile_tiff
from testkit.stack import run_script, subprocess_db_env
from tests.factories import PatientFactory

ROOT = Path(__file__).resolve().parents[2]
GROWTH_LIMIT_MB = 200

SCRIPT = r"""
import json, resource, sys
import django
django.setup()
from django.test import Client, override_settings
args = json.loads(sys.argv[1])
override_settings(MEDIA_ROOT=args["media"]).enable()
client = Client(HTTP_AUTHORIZATION=f"Token {args['token']}")
client.get("/api/slides/")  # warm up: imports, connections, the first response
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
answers = {}
for url in args["urls"]:
    response = client.get(url)
    answers[url] = [response.status_code, len(response.content),
                    response.json().get("code") if response.status_code >= 400 else None]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "answers": answers}))
"""


def _store_hostile_slide() -> tuple[Slide, Cell]:
    """The hostile file as stored before upload checks refused it (no probe)."""
    data = hostile_tiff()
    name = default_storage.save("slides/hostile.tif", ContentFile(data))
    slide = Slide(
        patient=PatientFactory.create(),
        original_filename="hostile.tif",
        format="generic-tiff",
        kind="wsi",
        width=20_000,
        height=20_000,
        level_count=1,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        status=SlideStatus.ANALYSED,
    )
    slide.file.name = name
    slide.save()
    cell = Cell.objects.create(
        slide=slide,
        x=0,
        y=0,
        width=20_000,
        height=20_000,
        predicted_class="",
        current_class="HSIL",
        review_status=ReviewStatus.ADDED,
    )
    return slide, cell


@pytest.mark.django_db(transaction=True)
def test_tiles_and_a_crop_of_a_hostile_file_stay_within_200_mb(
    admin_user, media_root: Path
) -> None:
    slide, cell = _store_hostile_slide()
    token, _ = Token.objects.get_or_create(user=admin_user)
    top = math.ceil(math.log2(20_000))  # Deep Zoom level of full resolution
    base = f"/api/slides/{slide.pk}/deepzoom_files"
    urls = [
        f"{base}/{top}/10_10.jpeg",  # full resolution: one tile's region
        f"{base}/{top - 3}/2_2.jpeg",  # 1/8: 2032 px of level 0, one chunk
        f"{base}/{top - 5}/0_0.jpeg",  # 1/32: 8128 px of level 0, read chunk by chunk
        f"{base}/0/0_0.jpeg",  # 1 px for the whole slide: 400 Mpx, refused (422)
        f"{base}/{top - 7}/0_0.jpeg",  # 1/128: 20000 px, refused (422)
        f"/api/cells/{cell.pk}/crop/",  # a box as large as the slide: capped to a cell
    ]
    arg = json.dumps({"token": token.key, "media": str(media_root), "urls": urls})
    report = run_script(SCRIPT, arg, env=subprocess_db_env(ALLOWED_HOSTS="testserver"), timeout=240)
    answers = report["answers"]
    assert [answers[u][0] for u in urls] == [200, 200, 200, 422, 422, 200], answers
    assert answers[urls[3]][2] == "region_too_large"
    print(f"peak RSS growth {report['growth_mb']:.0f} MB over {len(urls)} requests")
    assert report["growth_mb"] < GROWTH_LIMIT_MB, report


def test_a_crop_of_a_slide_sized_box_is_capped_to_a_cell(
    api, pathologist, media_root: Path, db
) -> None:
    _slide, cell = _store_hostile_slide()
    response = api(pathologist).get(f"/api/cells/{cell.pk}/crop/?pad=16")
    assert response.status_code == 200
    # 200 µm at the assumed 0.25 µm/px (the slide says no mpp) plus the padding
    assert Image.open(io.BytesIO(response.content)).size == (832, 832)


def test_chunked_reads_match_a_direct_read() -> None:
    """A region larger than a chunk, read chunk by chunk and scaled, is the same picture."""
    rng = np.random.default_rng(3)
    rgb = (rng.random((5000, 4200, 3)) * 40 + 100).astype("uint8")
    rgb[1000:3000, 500:2500] = (40, 20, 90)  # a dark block across chunk borders
    slide = PyramidImage(rgb)
    assert slide.level_downsamples[1] == pytest.approx(4.0, rel=0.01)
    w, h = 4200, 5000
    assert max(w, h) > READ_CHUNK
    out = read_scaled(slide, (0, 0), 0, (w, h), (420, 500))
    direct = Image.fromarray(rgb).resize((420, 500), Image.Resampling.BILINEAR)
    diff = np.abs(np.asarray(out, float) - np.asarray(direct, float))
    assert diff.mean() < 4
