"""The dataset pages in Chromium: the dashboard draws its SVG charts from the page's data, the
export page follows an export's progress and shows its download link when it is ready."""

from __future__ import annotations

import pytest

from papreview.datasets.build import dataset_export_build
from papreview.datasets.services import dataset_export_create
from testkit.browser import log_in, screenshot
from tests.factories import PatientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_dashboard_draws_charts_and_kappa(live_server, page, make_slide, pathologist, tmp_path):
    make_slide(
        PatientFactory.create(),
        cells=[
            (10, 10, 30, 30, "HSIL", "undecided"),
            (60, 10, 30, 30, "HSIL", "relabelled", "LSIL"),
            (110, 10, 30, 30, "NILM", "rejected"),
            (10, 100, 30, 30, "SCC", "added"),
        ],
    )
    log_in(page, live_server.url, pathologist.username)
    page.goto(f"{live_server.url}/models/dashboard/")
    page.wait_for_selector("#charts-classifier .chart svg rect[data-outcome]")
    drawn = page.eval_on_selector_all(
        "#charts-classifier svg rect[data-outcome]",
        "els => els.map(e => `${e.dataset.outcome}:${e.dataset.class}`)",
    )
    assert sorted(drawn) == ["added:SCC", "rejected:NILM", "relabelled:HSIL", "undecided:HSIL"]
    assert page.locator("#charts-detector .chart").count() == 1
    summary = page.locator("#charts-classifier .chart p").inner_text()
    # Rates over what people decided; the undecided cell is counted apart, never as kept.
    assert summary.startswith("2 decided: 0% kept") and "1 added" in summary
    assert "1 undecided (not counted)" in summary
    assert page.locator("#outcome-legend span").count() == 6
    row = page.locator('#kappa tr[data-pair="reviewer_vs_model"]')
    assert row.locator("td").first.inner_text() == "2"  # decided cells only
    screenshot(page, "dashboard.png")


def test_export_page_follows_progress_until_ready(live_server, page, make_slide, pathologist):
    make_slide(PatientFactory.create(), cells=[(10, 10, 30, 30, "HSIL", "accepted")])
    export = dataset_export_create(
        name="browser", created_by=pathologist, params={"train_only": True}
    )
    log_in(page, live_server.url, pathologist.username)
    page.goto(f"{live_server.url}/datasets/")
    row = page.locator(f'#exports tr[data-export="{export.pk}"]')
    assert row.get_attribute("data-status") == "pending"
    dataset_export_build(export_id=export.pk)  # as the worker would
    page.wait_for_selector(f'#exports tr[data-export="{export.pk}"] a[download]', timeout=20_000)
    assert "Ready" in page.locator(f'#exports tr[data-export="{export.pk}"]').inner_text()
