"""Review integrity: a cell is decided only by a person; sign-out is refused while flagged cells
more severe than the category are undecided; two tiers (refer, pathologist-only findings)."""

from __future__ import annotations

import importlib

import pytest
from django.contrib.auth.models import User

from papreview.audit.models import AuditAction, AuditEvent
from papreview.cases.models import Slide, SlideStatus
from papreview.review.models import Cell, CellRevision, CellSighting
from papreview.review.selectors import slide_flag_summary
from papreview.review.services import cell_update
from papreview.workflow.models import InterpretationDraft, SlideEvent, SlideEventKind
from papreview.workflow.selectors import review_queue_list, review_queue_next
from tests.factories import CellFactory, SlideFactory

pytestmark = pytest.mark.django_db


def flagged_slide(status: str = SlideStatus.IN_REVIEW) -> tuple[Slide, list[Cell]]:
    """A slide with two flagged cells (HSIL 0.9, ASC-US 0.7), one abnormal call below the flag
    threshold (LSIL 0.3) and one NILM call."""
    slide = SlideFactory.create(status=status)
    calls = [("HSIL", 0.9), ("ASC-US", 0.7), ("LSIL", 0.3), ("NILM", 0.95)]
    cells = [
        CellFactory.create(
            slide=slide,
            x=10 + 50 * i,
            predicted_class=code,
            current_class=code,
            probabilities={code: p} if code == "NILM" else {code: p, "NILM": round(1 - p, 2)},
        )
        for i, (code, p) in enumerate(calls)
    ]
    return slide, cells


def test_flag_summary_counts_abnormal_calls_above_the_threshold(settings) -> None:
    slide, cells = flagged_slide()
    summary = slide_flag_summary(slide_id=slide.pk)
    assert (summary.flagged, summary.reviewed) == (2, 0)
    assert summary.undecided == [(cells[0].pk, "HSIL"), (cells[1].pk, "ASC-US")]  # most severe
    assert summary.undecided_above("LSIL") == [cells[0].pk]
    assert summary.undecided_above("HSIL") == []
    settings.REVIEW_FLAG_THRESHOLD = 0.25  # the LSIL call at 0.3 is flagged too
    assert slide_flag_summary(slide_id=slide.pk).flagged == 3


@pytest.mark.parametrize("role", ["pathologist", "cytotech"])
def test_nilm_sign_out_is_refused_while_flagged_cells_are_undecided(api, request, role) -> None:
    user: User = request.getfixturevalue(role)
    slide, cells = flagged_slide()
    url = f"/api/slides/{slide.pk}/sign-out/"
    refused = api(user).post(url, {"bethesda_category": "NILM"})
    body = refused.json()
    assert refused.status_code == 409 and body["code"] == "flagged_cells_undecided"
    assert body["detail"].startswith("2 flagged cells more severe than NILM not yet reviewed")
    assert "mark them reviewed" in body["detail"]
    assert body["undecided_cells"] == [cells[0].pk, cells[1].pk]
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.IN_REVIEW
    assert not Cell.objects.filter(slide=slide).exclude(review_status="predicted").exists()
    # Deciding one (relabelled NILM) leaves one; rejecting the other clears the way.
    cell_update(cell=cells[0], version=cells[0].version, by=user, current_class="NILM")
    again = api(user).post(url, {"bethesda_category": "NILM"}).json()
    assert again["undecided_cells"] == [cells[1].pk] and again["detail"].startswith(
        "1 flagged cell "
    )
    cell_update(cell=cells[1], version=cells[1].version, by=user, review_status="rejected")
    ok = api(user).post(url, {"bethesda_category": "NILM"})
    assert ok.status_code == 200 and ok.json()["status"] == "signed_out"
    # Sign-out decided nothing: the unflagged cells stay undecided.
    undecided = set(
        Cell.objects.filter(slide=slide, review_status="predicted").values_list("pk", flat=True)
    )
    assert undecided == {cells[2].pk, cells[3].pk}


def test_a_more_severe_sign_out_is_not_held_up_by_less_severe_flags(api, pathologist) -> None:
    slide, cells = flagged_slide()
    cell_update(cell=cells[0], version=1, by=pathologist, review_status="confirmed")
    # The undecided ASC-US call is less severe than HSIL: HSIL hides nothing.
    ok = api(pathologist).post(f"/api/slides/{slide.pk}/sign-out/", {"bethesda_category": "HSIL"})
    assert ok.status_code == 200


def test_sightings_are_recorded_once_per_reviewer_and_way(api, cytotech, viewer) -> None:
    slide, cells = flagged_slide()
    url = f"/api/slides/{slide.pk}/sightings/"
    client = api(cytotech)
    first = client.post(url, {"cells": [cells[0].pk, cells[1].pk], "via": "gallery"}, format="json")
    assert first.status_code == 200 and first.json() == {"recorded": 2, "unknown": []}
    again = client.post(url, {"cells": [cells[0].pk, 999999], "via": "gallery"}, format="json")
    assert again.json() == {"recorded": 0, "unknown": [999999]}
    client.post(url, {"cells": [cells[0].pk], "via": "selected"}, format="json")
    rows = CellSighting.objects.filter(seen_by=cytotech).values_list("cell_id", "via")
    assert sorted(rows) == sorted(
        [(cells[0].pk, "gallery"), (cells[1].pk, "gallery"), (cells[0].pk, "selected")]
    )
    assert not Cell.objects.filter(slide=slide).exclude(review_status="predicted").exists()
    bad = client.post(url, {"cells": [cells[0].pk], "via": "heard"}, format="json")
    assert bad.status_code == 400 and "via" in bad.json()["fields"]
    empty = client.post(url, {"cells": [], "via": "gallery"}, format="json")
    assert empty.status_code == 400 and "cells" in empty.json()["fields"]
    assert api(viewer).post(url, {"cells": [cells[0].pk], "via": "gallery"}).status_code == 403


def test_reviewed_none_abnormal_clears_only_cells_the_reviewer_saw(api, cytotech) -> None:
    slide, cells = flagged_slide()
    client = api(cytotech)
    clear = f"/api/slides/{slide.pk}/cells/clear/"
    flagged = [cells[0].pk, cells[1].pk]
    unseen = client.post(clear, {"cells": flagged}, format="json")
    assert unseen.status_code == 409 and unseen.json()["code"] == "not_seen"
    assert unseen.json()["unseen_cells"] == flagged
    assert not CellRevision.objects.filter(cell__slide=slide).exists()  # nothing changed

    client.post(
        f"/api/slides/{slide.pk}/sightings/", {"cells": flagged, "via": "gallery"}, format="json"
    )
    cell_update(cell=cells[1], version=1, by=cytotech, review_status="confirmed")  # decided
    done = client.post(clear, {"cells": flagged}, format="json")
    assert done.status_code == 200
    body = done.json()
    assert [c["id"] for c in body["cleared"]] == [cells[0].pk] and body["skipped"] == [cells[1].pk]
    cell = Cell.objects.get(pk=cells[0].pk)
    assert (cell.review_status, cell.current_class, cell.version) == ("cleared", "NILM", 2)
    assert cell.last_reviewed_by == cytotech
    revision = CellRevision.objects.get(cell=cell)
    assert revision.before["review_status"] == "predicted"
    assert revision.after["review_status"] == "cleared" and revision.changed_by == cytotech
    event = AuditEvent.objects.get(action=AuditAction.CELLS_CLEARED)
    assert event.data == {"cells": [cells[0].pk], "count": 1} and event.actor_id == cytotech.pk
    assert slide_flag_summary(slide_id=slide.pk).reviewed == 2
    not_here = client.post(clear, {"cells": [999999]}, format="json")
    assert not_here.status_code == 400 and "cells" in not_here.json()["fields"]


def test_refer_then_only_a_pathologist_signs_out(api, client, cytotech, pathologist) -> None:
    slide, cells = flagged_slide(status=SlideStatus.ANALYSED)
    refer = f"/api/slides/{slide.pk}/refer/"
    no_reason = api(cytotech).post(refer, {"reason": " "})
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["fields"]
    not_pathologist = api(cytotech).post(refer, {"reason": "r", "pathologist": cytotech.pk})
    assert not_pathologist.status_code == 400 and "pathologist" in not_pathologist.json()["fields"]
    referred = api(cytotech).post(
        refer, {"reason": "Koilocytes, query LSIL", "pathologist": pathologist.pk}
    )
    assert referred.status_code == 200 and referred.json()["status"] == "referred"
    assert referred.json()["assigned_reviewer"] == pathologist.pk
    event = SlideEvent.objects.get(slide=slide, kind=SlideEventKind.REFERRED)
    assert event.by == cytotech and event.reason == "Koilocytes, query LSIL"
    assert event.before["status"] == SlideStatus.ANALYSED
    assert AuditEvent.objects.filter(action=AuditAction.REFER, slide_id=slide.pk).exists()
    again = api(cytotech).post(refer, {"reason": "again"})
    assert again.status_code == 409

    # The pathologists' queue: the status filter and the reason; their "next slide".
    queued = review_queue_list().get(status=SlideStatus.REFERRED)
    assert queued.pk == slide.pk and queued.referral_reason == "Koilocytes, query LSIL"  # type: ignore[attr-defined]
    other = SlideFactory.create(status=SlideStatus.IN_REVIEW, triage_score=0.1)
    after_other = review_queue_next(after_slide_id=other.pk, user=pathologist)
    assert after_other is not None and after_other.pk == slide.pk
    assert review_queue_next(after_slide_id=other.pk, user=cytotech) is None
    client.force_login(pathologist)
    page = client.get("/?status=referred")
    assert page.status_code == 200 and "Koilocytes, query LSIL" in page.content.decode()

    sign_out = f"/api/slides/{slide.pk}/sign-out/"
    cyto = api(cytotech).post(sign_out, {"bethesda_category": "NILM"})
    assert cyto.status_code == 403 and "referred" in cyto.json()["detail"]
    reassign = api(cytotech).post(f"/api/slides/{slide.pk}/assign/", {"reviewer": cytotech.pk})
    assert reassign.status_code == 403
    for cell in cells[:2]:
        cell_update(cell=cell, version=1, by=pathologist, review_status="confirmed")
    ok = api(pathologist).post(sign_out, {"bethesda_category": "HSIL"})
    assert ok.status_code == 200 and ok.json()["status"] == "signed_out"


def test_a_cytotechnologist_cannot_sign_out_nilm_over_a_pathologists_work(
    api, cytotech, pathologist
) -> None:
    """The scenario of the issue: the pathologist relabels a cell HSIL and saves an HSIL draft;
    the cytotechnologist takes the slide and tries to sign it out NILM."""
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    cell = CellFactory.create(
        slide=slide, predicted_class="LSIL", current_class="LSIL", probabilities={"LSIL": 0.4}
    )
    cell_update(cell=cell, version=1, by=pathologist, current_class="HSIL")
    draft_url = f"/api/slides/{slide.pk}/interpretation/"
    api(pathologist).put(draft_url, {"bethesda_category": "HSIL", "version": 0})
    # The cytotechnologist relabels the cell NILM and overwrites the draft: allowed (versioned),
    # but neither hides the pathologist's finding.
    cell.refresh_from_db()
    cell_update(cell=cell, version=cell.version, by=cytotech, current_class="NILM")
    api(cytotech).put(draft_url, {"bethesda_category": "NILM", "version": 1})
    assert InterpretationDraft.objects.get(slide=slide).pathologist_category == "HSIL"

    reassign = api(cytotech).post(f"/api/slides/{slide.pk}/assign/", {"reviewer": cytotech.pk})
    assert reassign.status_code == 403 and reassign.json()["code"] == "pathologist_finding"
    refused = api(cytotech).post(f"/api/slides/{slide.pk}/sign-out/", {"bethesda_category": "NILM"})
    assert refused.status_code == 403 and "HSIL" in refused.json()["detail"]
    assert Slide.objects.get(pk=slide.pk).status == SlideStatus.IN_REVIEW
    ok = api(pathologist).post(f"/api/slides/{slide.pk}/sign-out/", {"bethesda_category": "NILM"})
    assert ok.status_code == 200  # the pathologist may overrule their own finding


def test_a_pathologist_rejection_is_not_a_finding(api, cytotech, pathologist) -> None:
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    cell = CellFactory.create(slide=slide)
    cell_update(cell=cell, version=1, by=pathologist, review_status="rejected")
    ok = api(cytotech).post(f"/api/slides/{slide.pk}/sign-out/", {"bethesda_category": "NILM"})
    assert ok.status_code == 200


def test_migration_makes_cells_without_a_revision_undecided(pathologist) -> None:
    """Rows from before this change: a predicted cell whose status says reviewed but that no
    person ever changed (no revision) becomes undecided again; decided and added cells stay."""
    from django.apps import apps

    migration = importlib.import_module(
        "papreview.review.migrations.0002_sightings_cleared_undecided"
    )
    slide = SlideFactory.create()
    never_touched = CellFactory.create(
        slide=slide, review_status="confirmed", predicted_class="LSIL", current_class="HSIL"
    )
    decided = CellFactory.create(slide=slide)
    decided = cell_update(cell=decided, version=1, by=pathologist, current_class="ASC-H")
    added = CellFactory.create(
        slide=slide, run=None, predicted_class="", current_class="SCC", review_status="added"
    )
    migration.undecided_without_revision(apps, None)
    never_touched.refresh_from_db()
    assert (never_touched.review_status, never_touched.current_class) == ("predicted", "LSIL")
    assert Cell.objects.get(pk=decided.pk).review_status == "relabelled"
    assert Cell.objects.get(pk=added.pk).review_status == "added"
