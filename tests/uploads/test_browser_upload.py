"""The upload page in real Chromium: a connection dropped mid-file is resumed from the offset
the server holds, and the file arrives whole."""

from __future__ import annotations

import hashlib

import pytest

from papreview.cases.demo import synthetic_pap_bytes
from papreview.cases.models import Slide
from testkit.browser import log_in
from tests.factories import PatientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_dropped_chunk_is_resumed(live_server, page, pathologist, tmp_path) -> None:
    patient = PatientFactory.create(identifier="RESUME-1")
    data = synthetic_pap_bytes(seed=21)  # PNG, a few hundred kB
    path = tmp_path / "resume.png"
    path.write_bytes(data)
    patches: list[str] = []

    def drop_the_second_chunk(route) -> None:
        if route.request.method != "PATCH":
            route.continue_()
            return
        patches.append(route.request.headers["upload-offset"])
        if len(patches) == 2:
            route.abort("connectionreset")
        else:
            route.continue_()

    log_in(page, live_server.url, pathologist.username)
    page.goto(f"{live_server.url}/upload/?patient={patient.pk}")
    page.evaluate("document.getElementById('upload-page').dataset.chunkSize = '65536'")
    page.route("**/api/uploads/*/", drop_the_second_chunk)
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector('.file-item[data-state="done"]', timeout=30_000)

    chunks = -(-len(data) // 65536)
    assert len(patches) == chunks + 1  # the dropped chunk was sent again
    assert patches[1] == patches[2] == "65536"  # from the offset the server had
    slide = Slide.objects.get(patient=patient)
    assert slide.sha256 == hashlib.sha256(data).hexdigest()
    assert page.locator(".file-item .progress").get_attribute("aria-valuenow") == "100"
