"""The viewer's cell layer, the interpretation draft and suggestion, reopening with a reason,
assignment, and sign-out rules enforced on the server."""

from __future__ import annotations

import json

import pytest

from papreview.cases.models import Slide, SlideStatus
from papreview.review.models import Cell, ReviewStatus
from papreview.workflow.models import InterpretationDraft, SlideEvent, SlideEventKind
from tests.factories import CellFactory, SlideFactory

pytestmark = pytest.mark.django_db


def test_cell_layer_is_compact_and_complete(api, pathologist, django_assert_max_num_queries):
    slide = SlideFactory.create()
    CellFactory.create_batch(30, slide=slide)
    added = CellFactory.create(
        slide=slide, run=None, predicted_class="", review_status=ReviewStatus.ADDED
    )
    client = api(pathologist)
    with django_assert_max_num_queries(6):
        response = client.get(f"/api/slides/{slide.pk}/cell-layer/")
    body = response.json()
    assert body["fields"] == [
        "id",
        "x",
        "y",
        "width",
        "height",
        "current_class",
        "predicted_class",
        "review_status",
        "confidence",
        "version",
    ]
    assert len(body["rows"]) == 31
    rows = {row[0]: row for row in body["rows"]}
    assert rows[added.pk][8] == 1.0  # a drawn cell counts as certain
    some = Cell.objects.filter(slide=slide, run__isnull=False).first()
    assert some is not None
    assert rows[some.pk][1:6] == [some.x, some.y, some.width, some.height, "HSIL"]
    assert rows[some.pk][8] == 0.9  # probability of the predicted class


def test_suggestion_is_the_most_severe_reviewed_cell(api, pathologist) -> None:
    slide = SlideFactory.create()
    CellFactory.create(slide=slide, current_class="SCC", review_status=ReviewStatus.PREDICTED)
    CellFactory.create(slide=slide, current_class="SCC", review_status=ReviewStatus.REJECTED)
    CellFactory.create(slide=slide, current_class="LSIL", review_status=ReviewStatus.CONFIRMED)
    CellFactory.create(slide=slide, current_class="NILM", review_status=ReviewStatus.RELABELLED)
    client = api(pathologist)
    state = client.get(f"/api/slides/{slide.pk}/interpretation/").json()
    assert state["suggestion"] == {
        "bethesda_category": "LSIL",
        "reviewed_counts": {"NILM": 1, "LSIL": 1},
    }
    assert state["draft"] is None and state["interpretation"] is None
    CellFactory.create(
        slide=slide, run=None, predicted_class="", current_class="HSIL", review_status="added"
    )
    state = client.get(f"/api/slides/{slide.pk}/interpretation/").json()
    assert state["suggestion"]["bethesda_category"] == "HSIL"


def test_draft_is_kept_and_refused_once_signed_out(api, pathologist) -> None:
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    client = api(pathologist)
    url = f"/api/slides/{slide.pk}/interpretation/"
    no_version = client.put(url, {"bethesda_category": "HSIL"})
    assert no_version.status_code == 400 and "version" in no_version.json()["fields"]
    saved = client.put(
        url,
        {
            "bethesda_category": "HSIL",
            "specimen_adequacy": "satisfactory",
            "comment": "koilocytes",
            "version": 0,
        },
        format="json",
    )
    assert saved.status_code == 200
    assert saved.json()["draft"]["comment"] == "koilocytes"
    assert saved.json()["draft"]["updated_by"] == pathologist.username
    assert saved.json()["draft"]["version"] == 1
    assert client.get(url).json()["draft"]["bethesda_category"] == "HSIL"
    bad = client.put(url, {"bethesda_category": "XYZ", "version": 1})
    assert bad.status_code == 400 and "bethesda_category" in bad.json()["fields"]
    signed = client.post(f"/api/slides/{slide.pk}/sign-out/", {"bethesda_category": "HSIL"})
    assert signed.status_code == 200
    refused = client.put(url, {"bethesda_category": "NILM", "version": 1})
    assert refused.status_code == 409 and refused.json()["code"] == "slide_signed_out"
    assert "reopen" in refused.json()["detail"]


def test_a_stale_draft_save_is_refused_with_the_current_draft(api, pathologist, cytotech) -> None:
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    url = f"/api/slides/{slide.pk}/interpretation/"
    first = api(pathologist).put(url, {"bethesda_category": "HSIL", "comment": "p", "version": 0})
    assert first.status_code == 200
    # The cytotechnologist read no draft (version 0) and saves: someone saved in between.
    stale = api(cytotech).put(url, {"bethesda_category": "NILM", "comment": "c", "version": 0})
    body = stale.json()
    assert stale.status_code == 409 and body["code"] == "stale_draft"
    assert pathologist.username in body["detail"]
    assert body["draft"]["comment"] == "p" and body["draft"]["version"] == 1
    assert InterpretationDraft.objects.get(slide=slide).comment == "p"  # nothing lost
    # A version for a draft that does not exist is stale too (a clear 409, never a 500).
    other = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    none_yet = api(cytotech).put(
        f"/api/slides/{other.pk}/interpretation/", {"bethesda_category": "NILM", "version": 3}
    )
    assert none_yet.status_code == 409 and none_yet.json()["draft"] is None
    assert "send version 0" in none_yet.json()["detail"]
    ok = api(cytotech).put(url, {"bethesda_category": "NILM", "comment": "c", "version": 1})
    assert ok.status_code == 200 and ok.json()["draft"]["version"] == 2


def test_sign_out_rules_are_enforced_by_the_server(api, cytotech, pathologist) -> None:
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    refused = api(cytotech).post(
        f"/api/slides/{slide.pk}/sign-out/", {"bethesda_category": "ASC-US"}
    )
    assert refused.status_code == 403 and "pathologist" in refused.json()["detail"]
    nilm = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    ok = api(cytotech).post(f"/api/slides/{nilm.pk}/sign-out/", {"bethesda_category": "NILM"})
    assert ok.status_code == 200 and ok.json()["status"] == "signed_out"
    # A signed-out slide's cells are read-only.
    cell = CellFactory.create(slide=nilm)
    change = api(pathologist).patch(
        f"/api/cells/{cell.pk}/", {"version": cell.version, "current_class": "LSIL"}
    )
    assert change.status_code == 409 and "Reopen" in change.json()["detail"]


def test_only_a_pathologist_reopens_and_the_reason_is_kept(api, cytotech, pathologist) -> None:
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    client = api(pathologist)
    client.post(
        f"/api/slides/{slide.pk}/sign-out/", {"bethesda_category": "LSIL", "comment": "first read"}
    )
    url = f"/api/slides/{slide.pk}/reopen/"
    assert api(cytotech).post(url, {"reason": "check"}).status_code == 403
    no_reason = client.post(url, {"reason": "  "})
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["fields"]
    response = client.post(url, {"reason": "Second opinion found HSIL cells"})
    assert response.status_code == 200 and response.json()["status"] == "in_review"
    event = SlideEvent.objects.get(slide=slide, kind=SlideEventKind.REOPENED)
    assert event.reason == "Second opinion found HSIL cells" and event.by == pathologist
    assert event.before["bethesda_category"] == "LSIL" and event.before["comment"] == "first read"
    draft = InterpretationDraft.objects.get(slide=slide)
    assert draft.bethesda_category == "LSIL" and draft.comment == "first read"
    state = client.get(f"/api/slides/{slide.pk}/interpretation/").json()
    assert state["events"][0]["reason"] == "Second opinion found HSIL cells"
    # Reopening an open slide is an illegal transition.
    again = client.post(url, {"reason": "again"})
    assert again.status_code == 409 and again.json()["code"] == "illegal_transition"


def test_assign_to_a_reviewer(api, pathologist, cytotech, viewer) -> None:
    slide = SlideFactory.create()
    client = api(pathologist)
    url = f"/api/slides/{slide.pk}/assign/"
    response = client.post(url, {"reviewer": cytotech.pk})
    assert response.status_code == 200 and response.json()["assigned_reviewer"] == cytotech.pk
    assert SlideEvent.objects.filter(slide=slide, kind="assigned").count() == 1
    not_reviewer = client.post(url, {"reviewer": viewer.pk})
    assert not_reviewer.status_code == 400 and "reviewer" in not_reviewer.json()["fields"]
    assert client.post(url, {"reviewer": None}).json()["assigned_reviewer"] is None
    assert api(viewer).post(url, {"reviewer": pathologist.pk}).status_code == 403
    reviewers = {r["username"] for r in client.get("/api/reviewers/").json()}
    assert reviewers == {pathologist.username, cytotech.username}
    assert Slide.objects.get(pk=slide.pk).assigned_reviewer is None


def test_cell_layer_since_answers_only_changed_cells(api, pathologist) -> None:
    slide = SlideFactory.create()
    cells = CellFactory.create_batch(5, slide=slide)
    client = api(pathologist)
    first = client.get(f"/api/slides/{slide.pk}/cell-layer/").json()
    assert len(first["rows"]) == 5
    since = first["as_of"]
    assert client.get(f"/api/slides/{slide.pk}/cell-layer/", {"since": since}).json()["rows"] == []
    changed = client.patch(
        f"/api/cells/{cells[2].pk}/", {"version": 1, "current_class": "LSIL"}
    ).json()
    rows = client.get(f"/api/slides/{slide.pk}/cell-layer/", {"since": since}).json()["rows"]
    assert [(r[0], r[5], r[9]) for r in rows] == [(cells[2].pk, "LSIL", changed["version"])]
    bad = client.get(f"/api/slides/{slide.pk}/cell-layer/", {"since": "yesterday"})
    assert bad.status_code == 400 and "since" in bad.json()["fields"]


def _rows_of_columns(body: dict) -> dict[int, list]:
    """The rows a columnar layer stands for (classes and statuses decoded)."""
    cols, codes = body["columns"], body["codes"]
    rows = {}
    for i, cid in enumerate(cols["id"]):
        row = []
        for name in body["fields"]:
            value = cols[name][i]
            if name in codes:
                value = codes[name][value]
            elif name == "confidence":
                value = value / body["confidence_scale"]
            row.append(value)
        rows[cid] = row
    return rows


def test_cell_layer_columns_are_the_rows_and_cached_until_a_change(
    api, pathologist, django_assert_max_num_queries
) -> None:
    """`?layout=columns` (what the review page loads) says what the rows say; the whole layer
    comes from a per-process cache while the cells are unchanged, and never outlives a change."""
    from papreview.workflow import selectors

    slide = SlideFactory.create()
    CellFactory.create_batch(20, slide=slide)
    CellFactory.create(slide=slide, run=None, predicted_class="", review_status="added")
    client = api(pathologist)
    url = f"/api/slides/{slide.pk}/cell-layer/"
    rows = {r[0]: r for r in client.get(url).json()["rows"]}
    body = client.get(url, {"layout": "columns"}).json()
    assert "rows" not in body and _rows_of_columns(body) == rows
    # the same from any database (the rows through Python)
    python = selectors._columns_python(slide_id=slide.pk, since=None)
    assert _rows_of_columns({**body, "columns": json.loads(python)}) == rows
    with django_assert_max_num_queries(6):  # served again: one small query for the cells' state
        assert client.get(url, {"layout": "columns"}).json()["columns"] == body["columns"]
    cell = Cell.objects.filter(slide=slide, run__isnull=False).first()
    assert cell is not None
    client.patch(f"/api/cells/{cell.pk}/", {"version": 1, "current_class": "SCC"})
    after = client.get(url, {"layout": "columns"}).json()
    assert _rows_of_columns(after)[cell.pk][5] == "SCC"
    assert _rows_of_columns(after) == {r[0]: r for r in client.get(url).json()["rows"]}
    since = client.get(url, {"layout": "columns", "since": after["as_of"]}).json()
    assert since["columns"]["id"] == []
    Cell.objects.filter(pk=cell.pk).delete()
    assert cell.pk not in client.get(url, {"layout": "columns"}).json()["columns"]["id"]


def test_cell_layer_columns_are_shared_through_a_file_per_slide(
    api, pathologist, settings, tmp_path, monkeypatch
) -> None:
    """Another web process of the host (its own cache empty) reads the layer's file instead of
    building it; a change writes a new file in place of the slide's old one."""
    from papreview.workflow import selectors

    settings.CELL_LAYER_CACHE_DIR = tmp_path
    slide = SlideFactory.create()
    cells = CellFactory.create_batch(3, slide=slide)
    client = api(pathologist)
    url = f"/api/slides/{slide.pk}/cell-layer/"
    first = client.get(url, {"layout": "columns"}).json()["columns"]
    files = list(tmp_path.glob(f"{slide.pk}-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == first
    selectors._COLUMNS_CACHE.clear()  # as in another process
    built = selectors._columns_sql

    def no_build(**kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(selectors, "_columns_sql", no_build)
    assert client.get(url, {"layout": "columns"}).json()["columns"] == first
    monkeypatch.setattr(selectors, "_columns_sql", built)
    client.patch(f"/api/cells/{cells[0].pk}/", {"version": 1, "current_class": "LSIL"})
    after = client.get(url, {"layout": "columns"}).json()["columns"]
    assert after["version"][after["id"].index(cells[0].pk)] == 2
    files = list(tmp_path.glob(f"{slide.pk}-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == after
