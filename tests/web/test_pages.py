"""The server-rendered pages: the review queue (ordering, filters, paging, a constant number of
queries with 10,000 slides), the upload page and the slide review page."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

import pytest
from django.utils import timezone

from inference.types import BETHESDA_CLASSES
from papreview.analysis.models import AnalysisRun, RunStatus
from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.review.models import DECIDED_STATUSES, ReviewStatus
from tests.factories import AnalysisRunFactory, CellFactory, PatientFactory, SlideFactory

pytestmark = pytest.mark.django_db

STATUSES = [s for s in SlideStatus.values]


def _bulk_slides(n: int, patients: list[Patient]) -> list[Slide]:
    slides = []
    for i in range(n):
        cls = BETHESDA_CLASSES[i % len(BETHESDA_CLASSES)]
        slides.append(
            Slide(
                patient=patients[i % len(patients)],
                file=f"slides/bulk/{i}.png",
                original_filename=f"bulk-{i:05d}.png",
                format="png",
                kind="field",
                width=1000,
                height=800,
                sha256=hashlib.sha256(f"bulk-{i}".encode()).hexdigest(),
                status=STATUSES[i % len(STATUSES)],
                failure_reason="broken" if STATUSES[i % len(STATUSES)] == "failed" else "",
                triage_class=cls,
                triage_score=BETHESDA_CLASSES.index(cls) + (i % 97) / 100,
            )
        )
    return Slide.objects.bulk_create(slides, batch_size=2000)


def test_queue_query_count_is_constant_with_10000_slides(
    client, pathologist, cytotech, django_assert_max_num_queries
) -> None:
    patients = PatientFactory.create_batch(50)
    slides = _bulk_slides(10_000, patients)
    AnalysisRun.objects.bulk_create(
        [AnalysisRun(slide=s, status=RunStatus.RUNNING, progress=40) for s in slides[:2000]]
    )
    for s in slides[:20]:
        CellFactory.create(slide=s, review_status=ReviewStatus.CONFIRMED, current_class="SCC")
    Slide.objects.filter(pk__in=[s.pk for s in slides[:500]]).update(assigned_reviewer=pathologist)
    client.force_login(pathologist)
    urls = [
        "/",
        "/?page=3",
        "/?status=all&triage_class=HSIL&mine=on",
        "/?q=P-&date_from=2020-01-01&date_to=2100-01-01&status=analysing",
    ]
    for url in urls:
        with django_assert_max_num_queries(8):
            response = client.get(url)
        assert response.status_code == 200
    first = client.get("/")
    assert b"page 1 of" in first.content
    scores = [
        float(s)
        for s in re.findall(
            rb'<span class="cls" data-class="[^"]+">([0-9.]+)</span>', first.content
        )
    ]
    assert len(scores) == 50 and scores == sorted(scores, reverse=True)  # most suspicious first


def test_queue_filters_and_search(client, pathologist, cytotech) -> None:
    mine = SlideFactory.create(
        original_filename="mine-hsil.png",
        triage_class="HSIL",
        triage_score=4.9,
        assigned_reviewer=pathologist,
        patient=PatientFactory.create(identifier="LAB-777"),
    )
    SlideFactory.create(original_filename="other-lsil.png", triage_class="LSIL", triage_score=2.5)
    signed = SlideFactory.create(original_filename="done.png", status=SlideStatus.SIGNED_OUT)
    old = SlideFactory.create(original_filename="old.png")
    Slide.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=30))
    client.force_login(pathologist)

    def names(url: str) -> set[str]:
        content = client.get(url).content.decode()
        return set(re.findall(r">([\w-]+\.png)</a>", content))

    assert names("/") == {"mine-hsil.png", "other-lsil.png", "old.png"}  # not signed out
    assert "done.png" in names("/?status=all") and names("/?status=signed_out") == {"done.png"}
    assert names("/?triage_class=HSIL") == {"mine-hsil.png"}
    assert names("/?mine=on") == {"mine-hsil.png"}
    assert names("/?q=lab-7") == {"mine-hsil.png"}
    since = (timezone.now() - dt.timedelta(days=2)).date().isoformat()
    assert "old.png" not in names(f"/?date_from={since}")
    until = (timezone.now() - dt.timedelta(days=10)).date().isoformat()
    assert names(f"/?date_to={until}") == {"old.png"}
    page = client.get("/").content.decode()
    assert f'data-assign="{mine.pk}"' in page and "(me)" in page
    assert signed.pk


def test_queue_shows_progress_and_suggestion(client, pathologist) -> None:
    running = SlideFactory.create(status=SlideStatus.ANALYSING, original_filename="run.png")
    AnalysisRun.objects.create(slide=running, status=RunStatus.RUNNING, progress=37)
    reviewed = SlideFactory.create(triage_class="LSIL", triage_score=2.8)
    CellFactory.create(slide=reviewed, current_class="ASC-H", review_status=ReviewStatus.RELABELLED)
    client.force_login(pathologist)
    content = client.get("/").content.decode()
    assert 'aria-valuenow="37"' in content and 'data-poll="1"' in content
    assert 'data-class="ASC-H">ASC-H</span> <span class="source">reviewed cells' in content


def test_upload_page(client, pathologist, viewer) -> None:
    PatientFactory.create(identifier="UP-1")
    client.force_login(pathologist)
    page = client.get("/upload/")
    assert page.status_code == 200
    content = page.content.decode()
    assert "UP-1" in content and 'id="dropzone"' in content and "js/upload.js" in content
    assert 'data-chunk-size="8388608"' in content
    client.force_login(viewer)
    assert "cannot upload" in client.get("/upload/").content.decode() or "not upload" in (
        client.get("/upload/").content.decode()
    )


def test_review_page_config_and_assets(client, pathologist, cytotech) -> None:
    slide = SlideFactory.create(width=4000, height=3000)
    client.force_login(cytotech)
    page = client.get(f"/slides/{slide.pk}/")
    assert page.status_code == 200
    content = page.content.decode()
    assert "vendor/openseadragon/openseadragon.min.js" in content
    # no asset from a CDN (a URL whose host names one; a random CSRF token may spell "cdn")
    assert not re.search(r"//[^\"'\s/]*cdn", content.lower()) and "https://" not in content
    found = re.search(r'id="review-config" type="application/json">(.*?)</script>', content)
    assert found is not None
    config = json.loads(found.group(1))
    assert config["slide"] == {
        "id": slide.pk,
        "width": 4000,
        "height": 3000,
        "status": "analysed",
        "filename": slide.original_filename,
        "mpp": None,
        "planes": 1,
    }
    assert config["urls"]["dzi"] == f"/api/slides/{slide.pk}/deepzoom.dzi?g=256-0"
    assert config["user"] == {
        "canWrite": True,
        "canReopen": False,
        "signOutClasses": ["NILM"],
        "canRefer": True,
        "isPathologist": False,
    }
    assert config["review"] == {
        "flagThreshold": 0.5,
        "decidedStatuses": list(DECIDED_STATUSES),  # one vocabulary, from Python
    }
    assert config["reviewStatusLabels"]["cleared"] == "Reviewed: not abnormal"
    assert config["colours"]["HSIL"] == "#d55e00"
    client.force_login(pathologist)
    pathologist_config = client.get(f"/slides/{slide.pk}/").content.decode()
    assert f'"signOutClasses": {json.dumps(list(BETHESDA_CLASSES))}' in pathologist_config
    assert client.get("/slides/999999/").status_code == 404


def test_static_files_come_from_npm_and_static(client, pathologist) -> None:
    client.force_login(pathologist)
    for path in (
        "/static/vendor/openseadragon/openseadragon.min.js",
        "/static/vendor/openseadragon/images/home_rest.png",
        "/static/css/app.css",
        "/static/js/review/main.js",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        b"".join(response.streaming_content)


def test_review_page_links_the_next_slide_to_review(client, pathologist, cytotech) -> None:
    current = SlideFactory.create(triage_score=5.5)
    SlideFactory.create(triage_score=5.9, status=SlideStatus.SIGNED_OUT)  # done
    SlideFactory.create(triage_score=5.8, assigned_reviewer=cytotech)  # someone else's
    following = SlideFactory.create(triage_score=4.1, status=SlideStatus.IN_REVIEW)
    SlideFactory.create(triage_score=3.0)
    client.force_login(pathologist)
    content = client.get(f"/slides/{current.pk}/").content.decode()
    assert f'id="next-slide" href="/slides/{following.pk}/"' in content
    Slide.objects.exclude(pk=current.pk).update(status=SlideStatus.SIGNED_OUT)
    assert 'id="next-slide"' not in client.get(f"/slides/{current.pk}/").content.decode()


def test_review_page_says_how_many_objects_the_latest_run_set_aside(client, cytotech) -> None:
    slide = SlideFactory.create()
    client.force_login(cytotech)
    assert 'id="set-aside"' not in client.get(f"/slides/{slide.pk}/").content.decode()
    now = timezone.now()
    AnalysisRunFactory.create(slide=slide, finished_at=now - dt.timedelta(hours=1), timings={})
    AnalysisRunFactory.create(slide=slide, finished_at=now, timings={"set_aside": 37.0})
    AnalysisRunFactory.create(slide=slide, status=RunStatus.RUNNING, timings={"set_aside": 5.0})
    AnalysisRunFactory.create(slide=slide, finished_at=None, timings={"set_aside": 9.0})
    content = client.get(f"/slides/{slide.pk}/").content.decode()
    said = re.search(r'id="set-aside"[^>]*>([^<]*)<', content)
    assert said is not None and said.group(1) == "37 objects set aside"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_review_page_has_no_test_hooks_in_production(
    settings, client, live_server, page, pathologist, stored_slide
) -> None:
    from testkit.browser import log_in

    settings.PAPREVIEW_TEST_HOOKS = False  # the production default (the live server shares it)
    slide = stored_slide(cells=5, seed=3)
    client.force_login(pathologist)
    content = client.get(f"/slides/{slide.pk}/").content.decode()
    found = re.search(r'id="review-config" type="application/json">(.*?)</script>', content)
    assert found is not None
    config = json.loads(found.group(1))
    assert config["testHooks"] is False
    assert config["slideStatusLabels"] == dict(SlideStatus.choices)
    log_in(page, live_server.url, pathologist.username)
    page.goto(f"{live_server.url}/slides/{slide.pk}/")
    page.wait_for_function("document.querySelector('#hud').textContent.includes('in view of 5')")
    assert page.locator("#slide-status").inner_text() == SlideStatus.ANALYSED.label
    assert page.evaluate("[window.__review, window.__cellsDrawnAt]") == [None, None]
    assert page.evaluate("typeof window.__review") == "undefined"
