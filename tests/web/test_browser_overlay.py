"""The overlay is readable at every zoom (issue 15, item 5), in real Chromium: with thousands of
cells in view, or cells a few pixels wide, a density map of counts per square replaces the boxes;
zoomed in, boxes come back; a scale bar in micrometres follows the zoom when the slide says its
microns per pixel, and there is none when it does not."""

from __future__ import annotations

import pytest

from papreview.cases.models import Slide
from testkit.browser import open_review, screenshot, state_when_still, wait_viewer_still
from testkit.fixtures import make_cells

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STATE = """() => {
  const o = window.__review.overlay;
  const t = o.transform();
  return {mode: o.mode, n: o.drawnCount, bins: o.densityBins, scale: t.s, bar: o.scaleBar,
          hud: document.getElementById('hud').textContent};
}"""


def _drawn(page) -> dict:
    return state_when_still(page, STATE)


def test_density_map_far_out_boxes_close_in_and_a_scale_bar(
    live_server, page, pathologist, stored_slide
) -> None:
    slide = stored_slide(cells=0, seed=5)
    make_cells(slide, 6000, seed=5)
    Slide.objects.filter(pk=slide.pk).update(mpp=0.25)
    open_review(page, live_server.url, pathologist.username, slide.pk)

    far = _drawn(page)
    assert far["n"] > 4000 and far["mode"] == "density"  # (the home view may clip an edge)
    assert 0 < far["bins"] < 6000  # squares with counts, not one mark per cell
    assert "counts per square" in far["hud"]
    bar = far["bar"]
    assert bar is not None and 50 <= bar["px"] <= 120
    assert bar["um"] == pytest.approx(bar["px"] / far["scale"] * 0.25)
    assert bar["label"].endswith("µm")
    screenshot(page, "overlay-density.png")

    page.evaluate("window.__review.viewer.viewport.zoomBy(12)")
    near = _drawn(page)
    assert near["mode"] == "boxes" and 0 < near["n"] < 4000
    assert "counts per square" not in near["hud"]
    assert near["bar"]["um"] < bar["um"]  # the bar follows the zoom
    assert near["bar"]["um"] == pytest.approx(near["bar"]["px"] / near["scale"] * 0.25)
    screenshot(page, "overlay-boxes.png")


def test_no_scale_bar_without_microns_per_pixel(live_server, page, pathologist, stored_slide):
    slide = stored_slide(cells=50, seed=6)
    assert slide.mpp is None
    open_review(page, live_server.url, pathologist.username, slide.pk)
    state = _drawn(page)
    assert state["mode"] == "boxes" and state["bar"] is None


FOLLOW = """async () => {
  const r = window.__review, o = r.overlay, v = r.viewer.viewport, OSD = window.OpenSeadragon;
  const frame = () => new Promise(requestAnimationFrame);
  o.motionDrawMs = 60000;  // no full draw while we look
  o.schedule();
  await frame(); await frame();
  const drawn = o.drawnAt, draws = {n: 0}, realDraw = o.draw;
  o.draw = function () { draws.n++; return realDraw.call(this); };
  v.panBy(new OSD.Point(0.05, 0.03), true);
  v.zoomBy(1.3, null, true);
  await frame(); await frame();
  const t = o.transform();
  const m = o.canvas.style.transform.match(
    /translate\\(([-\\d.e]+)px, ([-\\d.e]+)px\\) scale\\(([\\d.e]+)\\)/);
  // where a slide point drawn at the last full draw is now put, and where the view puts it
  const x = 1234, y = 987;
  const moved = m && [Number(m[1]) + Number(m[3]) * (drawn.ox + x * drawn.s),
                      Number(m[2]) + Number(m[3]) * (drawn.oy + y * drawn.s)];
  o.draw = realDraw;
  return {moved, view: [t.ox + x * t.s, t.oy + y * t.s], draws: draws.n};
}"""
REST = """() => {
  const r = window.__review, o = r.overlay;
  o.motionDrawMs = 50;
  r.viewer.viewport.panBy(new window.OpenSeadragon.Point(0.01, 0), true);  // moves, then rests
}"""


def test_overlay_follows_the_view_between_full_draws_and_is_drawn_when_it_rests(
    live_server, page, pathologist, stored_slide
) -> None:
    """While the view moves, the canvas drawn last is moved and scaled with it (no full draw
    every frame) so that each slide point stays under its mark; once the view rests, the overlay
    is drawn in full at the new view and the canvas is no longer transformed."""
    slide = stored_slide(cells=0, seed=9)
    make_cells(slide, 3000, seed=9)
    open_review(page, live_server.url, pathologist.username, slide.pk)
    _drawn(page)
    follows = page.evaluate(FOLLOW)
    assert follows["moved"] is not None, "the canvas did not follow the view"
    assert follows["draws"] == 0
    assert follows["moved"] == pytest.approx(follows["view"], abs=0.01)
    screenshot(page, "overlay-following.png")  # as a reviewer sees it between full draws
    page.evaluate(REST)
    page.wait_for_function(
        "!window.__review.overlay.canvas.style.transform && !window.__review.overlay.stale"
    )
    rested = page.evaluate(
        "(() => { const o = window.__review.overlay; return [o.drawnAt.s, o.transform().s]; })()"
    )
    assert rested[0] == pytest.approx(rested[1])


def test_gallery_crops_at_one_magnification_with_a_scale(
    live_server, page, pathologist, stored_slide
) -> None:
    """The gallery (issue 15, item 6): 48 crops by default, 24/96/192 on demand, each 80 µm
    across at 144 px (its own pixels, never enlarged), with a 20 µm bar beside the count."""
    slide = stored_slide(cells=300, seed=8)
    Slide.objects.filter(pk=slide.pk).update(mpp=0.5)
    open_review(page, live_server.url, pathologist.username, slide.pk)
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 48")
    page.wait_for_function(
        """[...document.querySelectorAll('#gallery .thumb img')].slice(0, 6)
        .every((i) => i.complete && i.naturalWidth)"""
    )
    sizes = page.evaluate(
        """[...document.querySelectorAll('#gallery .thumb img')].slice(0, 6).map(
        (i) => [i.naturalWidth, i.naturalHeight, i.clientWidth, new URL(i.src).search])"""
    )
    assert all(s[:3] == [144, 144, 144] and "fov=80&size=144" in s[3] for s in sizes), sizes
    scale = page.locator("#gallery-scale").inner_text()
    assert "80 µm across" in scale and "20 µm" in scale and "assumed" not in scale
    bar = page.evaluate(
        "document.querySelector('#gallery-scale .bar').getBoundingClientRect().width"
    )
    assert bar == pytest.approx(144 * 20 / 80, abs=1)
    screenshot(page, "gallery-magnification.png")
    page.locator("#gallery-n").select_option("24")
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 24")
    page.get_by_role("button", name="Show 24 more").click()
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 48")


def test_focus_keys_step_through_the_planes_of_a_z_stack(
    live_server, page, pathologist, tmp_path
) -> None:
    """Issue 15, item 2: ] and [ (or PageDown / PageUp) show the next / previous focal plane,
    whose tiles come with ?z=; the view stays where it was."""
    import numpy as np
    from django.core.files.uploadedfile import SimpleUploadedFile

    from papreview.cases.models import SlideStatus
    from papreview.cases.services import slide_create
    from testkit.images import field_image
    from testkit.slidefiles import write_ome_tiff
    from tests.factories import PatientFactory

    img = field_image(1024, 768, seed=13)
    planes = [img, 255 - img, (img // 2).astype(np.uint8)]
    path = write_ome_tiff(tmp_path / "z.ome.tif", img, mpp=0.5, levels=2, planes=planes)
    slide = slide_create(
        patient=PatientFactory.create(),
        file=SimpleUploadedFile(path.name, path.read_bytes()),
        original_filename=path.name,
    )
    Slide.objects.filter(pk=slide.pk).update(status=SlideStatus.ANALYSED)
    make_cells(slide, 20, seed=1)
    tiles: list[str] = []
    page.on("request", lambda r: tiles.append(r.url) if "deepzoom_files" in r.url else None)
    open_review(page, live_server.url, pathologist.username, slide.pk)
    assert page.locator("#focus").inner_text().startswith("Focus 1 / 3")
    wait_viewer_still(page)
    zoom = page.evaluate("window.__review.viewer.viewport.getZoom()")
    page.keyboard.press("]")
    page.wait_for_function("window.__review.plane === 1")
    for _ in range(100):  # the new plane's descriptor, then its tiles
        if any(u.endswith("&z=1") for u in tiles):
            break
        page.wait_for_timeout(100)
    assert any(u.endswith("?g=256-0&z=1") for u in tiles), tiles[-5:]
    assert page.locator("#focus").inner_text().startswith("Focus 2 / 3")
    wait_viewer_still(page)
    after = page.evaluate("window.__review.viewer.viewport.getZoom()")
    assert after == pytest.approx(zoom, rel=1e-3)
    page.keyboard.press("PageDown")
    page.wait_for_function("window.__review.plane === 2")
    page.keyboard.press("]")  # no plane below the last
    page.keyboard.press("[")
    page.wait_for_function("window.__review.plane === 1")
    screenshot(page, "focus-plane.png")
