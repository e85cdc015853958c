// The slide viewer: OpenSeadragon over the Deep Zoom tiles with the cell overlay on top, and
// moving the view to a cell.
import { toast } from "../api.js";
import { Overlay } from "./cells.js";

const $ = (id) => document.getElementById(id);

/** Open the viewer and its overlay (set on `page` and on `page.state`); the mouse goes to `mouse`
 * (editing.js: select, move/resize, draw). */
export function startViewer(page, mouse) {
  const { config, state, store } = page;
  const viewer = window.OpenSeadragon({
    id: "viewer",
    prefixUrl: config.urls.osdImages,
    tileSources: config.urls.dzi,
    showNavigator: true,
    navigatorPosition: "TOP_RIGHT",
    showRotationControl: false,
    keyboardNavEnabled: false, // the page's own keys (R would rotate, F flip)
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    maxZoomPixelRatio: 4,
    visibilityRatio: 0.5,
    crossOriginPolicy: false,
    ajaxWithCredentials: false, // same-origin requests carry the session cookie anyway
    loadTilesWithAjax: false,
    timeout: 60000,
    // The 2D canvas drawer (OpenSeadragon's default before 5), for the viewer and its navigator:
    // the WebGL drawer's support check alone (a context made and read back, twice) cost 330 ms
    // of the page's start on a machine without a GPU, and each of its frames is copied again onto
    // a 2D canvas; a Deep Zoom pyramid of JPEG tiles needs nothing it adds.
    drawer: "canvas",
  });
  const overlay = new Overlay(viewer, $("overlay"), store, config.colours);
  overlay.mpp = config.slide.mpp || null;
  page.overlay = overlay;
  page.viewer = viewer;
  state.overlay = overlay;
  state.viewer = viewer;
  overlay.onDrawn = (n, scale, mode) => {
    const density = mode === "density" ? " · counts per square (zoom in for boxes)" : "";
    const twins = overlay.hidden.size;
    const merged = twins ? ` · ${twins} overlapping box${twins === 1 ? "" : "es"} drawn once` : "";
    const aside = !overlay.setAside ? "" : (mode === "density" ? " · zoom in to see the objects set aside" : ` · ${overlay.setAsideDrawn.toLocaleString()} set aside in view (grey)`);
    $("hud").textContent = `${n.toLocaleString()} cell${n === 1 ? "" : "s"} in view of ${store.cells.length.toLocaleString()} · ${(scale * 100).toFixed(scale < 0.1 ? 1 : 0)}%${density}${merged}${aside}`;
    if (state.cellsLoaded && state.cellsDrawnAt === undefined) {
      state.cellsDrawnAt = performance.now();
      performance.mark("cells-drawn");
      if (config.testHooks) window.__cellsDrawnAt = state.cellsDrawnAt; // the browser tests wait on it
    }
  };
  viewer.addHandler("open", () => { performance.mark("viewer-open"); state.viewerOpen = true; overlay.schedule(); });
  viewer.addHandler("open-failed", (e) => toast(`The slide image cannot be shown: ${e.message || "tile server error"}.`, "error", 10000));
  viewer.addHandler("canvas-click", mouse.onClick);
  viewer.addHandler("canvas-press", mouse.onPress);
  viewer.addHandler("canvas-drag", mouse.onDrag);
  viewer.addHandler("canvas-drag-end", (e) => { if (state.drag) e.preventDefaultAction = true; });
  viewer.addHandler("canvas-release", mouse.onRelease);
  return viewer;
}

/** Centre the cell; zoom in until it is about an eighth of the view wide (never out, unless it
 * does not fit), so a reviewer sees it at a useful magnification. */
export function panTo(viewer, cell, zoomIn = false) {
  if (!viewer || !viewer.world.getItemCount()) return;
  const OSD = window.OpenSeadragon;
  const vp = viewer.viewport;
  const centre = vp.imageToViewportCoordinates(new OSD.Point(cell.x + cell.w / 2, cell.y + cell.h / 2));
  const box = vp.imageToViewportRectangle(new OSD.Rect(cell.x, cell.y, cell.w, cell.h));
  const view = vp.getBounds();
  const want = Math.max(box.width, box.height * (view.width / view.height)) * 8;
  if (zoomIn || view.width > want * 1.5 || box.width > view.width / 2 || box.height > view.height / 2) {
    const h = want * (view.height / view.width);
    vp.fitBounds(new OSD.Rect(centre.x - want / 2, centre.y - h / 2, want, h));
  } else {
    vp.panTo(centre);
  }
}

/** Focus: show focal plane `z` of a Z stack (its tiles: the descriptor's ?z= goes to each), the
 * view kept where it is; the cells stay (each was classified in its own sharpest plane). */
export function setPlane(page, z) {
  const { config, state, viewer } = page;
  const planes = config.slide.planes || 1;
  const next = Math.min(planes - 1, Math.max(0, z));
  if (!viewer || planes < 2 || next === (state.plane || 0)) return;
  state.plane = next;
  const view = viewer.viewport.getBounds(true); // replacing the image resets the world: keep the view
  viewer.addTiledImage({
    tileSource: `${config.urls.dzi}${config.urls.dzi.includes("?") ? "&" : "?"}z=${next}`, index: 0, replace: true,
    success: () => viewer.viewport.fitBounds(view, true),
  });
  const focus = document.getElementById("focus");
  if (focus) focus.firstChild.textContent = `Focus ${next + 1} / ${planes} · `;
}

/** The zoom keys: in, out, the whole slide. */
export function zoomBy(viewer, factor) { viewer?.viewport.zoomBy(factor); }
export function goHome(viewer) { viewer?.viewport.goHome(); }
