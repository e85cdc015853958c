// Slide review page: the wiring of its parts. The OpenSeadragon viewer over Deep Zoom tiles
// (viewer.js) with the cell overlay (cells.js); the selected cell's card and moving between cells
// (selection.js); keyboard review (keys.js) with undo/redo, every action saved at once with the
// cell's version (editing.js); the flagged-cell counter (flags.js), the ranked gallery
// (gallery.js), the interpretation panel (interpretation.js), the line display (display.js) and the
// slide kept current (sync.js). Each part reaches the others through `page`.
import { CellStore, confidenceOf } from "./cells.js";
import { swatchSvg } from "./styles.js";
import { bindDisplay } from "./display.js";
import { createEditing } from "./editing.js";
import { Flags, Sightings } from "./flags.js";
import { Gallery } from "./gallery.js";
import { Interpretation } from "./interpretation.js";
import { bindKeys } from "./keys.js";
import { createSelection } from "./selection.js";
import { bindSetAside } from "./setaside.js";
import { createSync } from "./sync.js";
import { startViewer } from "./viewer.js";

const config = JSON.parse(document.getElementById("review-config").textContent);
const $ = (id) => document.getElementById(id);
const REVIEWABLE = new Set(["analysed", "in_review", "referred"]); // as the server's REVIEWABLE_STATUSES
// The server's words for a slide's status and for what a cell's review status means.
const SLIDE_STATUS_LABELS = config.slideStatusLabels || {};
const REVIEW_STATUS_LABELS = config.reviewStatusLabels || {};
const statusLabel = (status) => REVIEW_STATUS_LABELS[status] || status;

const state = {
  status: config.slide.status,
  undo: [],
  redo: [],
  saving: Promise.resolve(),
  inFlight: 0,
  drawMode: false,
  drag: null,
};
const store = new CellStore(config);
state.store = store;
if (config.testHooks) window.__review = state; // for the browser tests and the benchmark only

function editable() {
  return config.user.canWrite && REVIEWABLE.has(state.status);
}

function setStatus(status) {
  state.status = status;
  const badge = $("slide-status");
  badge.className = `badge status-${status}`;
  badge.textContent = SLIDE_STATUS_LABELS[status] || status;
  document.body.dataset.slideStatus = status;
  document.body.classList.toggle("read-only", !editable());
  $("draw-btn").disabled = !editable();
  if (page.overlay) { page.overlay.editable = editable(); page.overlay.schedule(); }
  $("reanalyse-btn").hidden = !config.user.canWrite || !["analysed", "in_review", "failed"].includes(status);
  page.renderCell();
  page.gallery?.updateButton();
}

function renderCounts() {
  const counts = store.counts();
  for (const span of document.querySelectorAll("[data-count]")) span.textContent = (counts[span.dataset.count] || 0).toLocaleString();
}

// The parts, and what they offer each other (the overlay, viewer, gallery and interpretation are
// set up in init()).
const page = {
  config, state, store, editable, setStatus, statusLabel, renderCounts,
  flags: new Flags(store, config.review?.flagThreshold ?? 0.5),
  // Viewers decide nothing, so what they see is not recorded (the server refuses it anyway).
  sightings: new Sightings(config.user.canWrite ? config.urls.sightings : null),
  overlay: null, viewer: null, gallery: null, interpretation: null,
};
Object.assign(page, createSelection(page), createEditing(page), createSync(page));

// --- Legend, filters and buttons ----------------------------------------------------------------

function bindControls() {
  $("legend").addEventListener("change", (e) => {
    const box = e.target.closest("input[data-class]");
    if (!box) return;
    store.classOn[box.dataset.class] = box.checked;
    box.closest("label").classList.toggle("off", !box.checked);
    page.overlay.schedule();
  });
  $("confidence").addEventListener("input", (e) => {
    store.minConfidence = Number(e.target.value);
    $("confidence-out").textContent = store.minConfidence.toFixed(2);
    page.overlay.schedule();
  });
  $("show-rejected").addEventListener("change", (e) => { store.showRejected = e.target.checked; page.overlay.schedule(); });
  $("draw-btn").addEventListener("click", () => page.setDrawMode(!state.drawMode));
  $("flag-counter").addEventListener("click", (e) => { e.currentTarget.blur(); page.nextFlagged(); });
  $("cell-actions").addEventListener("click", (e) => {
    const button = e.target.closest("[data-action]");
    if (!button) return;
    button.blur();
    ({ accept: page.accept, reject: page.reject, next: page.next, prev: page.prev })[button.dataset.action]?.();
  });
  $("relabel").addEventListener("click", (e) => {
    const b = e.target.closest("[data-relabel]");
    if (!b) return;
    b.blur();
    page.relabel(b.dataset.relabel);
  });
  $("reanalyse-btn").addEventListener("click", page.reanalyse);
  $("undo-btn").addEventListener("click", page.undo);
  $("redo-btn").addEventListener("click", page.redo);
  window.addEventListener("beforeunload", (e) => { if (state.inFlight) { e.preventDefault(); e.returnValue = ""; } });
}

function init() {
  page.restoreHistory();
  page.gallery = new Gallery({
    config, store, flags: page.flags, sightings: page.sightings, statusLabel, editable,
    onSelect: (id) => page.select(id, { pan: true }),
    onCleared: (changed, { refresh = false } = {}) => {
      if (refresh) { page.refreshSlide(); return; }
      if (changed.length && state.status === "analysed") setStatus("in_review");
      if (changed.some((c) => c.id === state.selected)) page.renderCell();
      page.overlay.schedule();
      page.interpretation?.refreshSuggestion();
    },
  });
  bindControls();
  for (const sw of document.querySelectorAll("#legend .sw[data-class]")) {
    sw.replaceWith(swatchSvg(sw.dataset.class, config.colours[sw.dataset.class]));
  }
  store.onChange(() => { renderCounts(); page.renderFlagCounter(); });
  startViewer(page, page.mouse);
  bindDisplay(page.overlay);
  bindKeys(page);
  bindSetAside(page);
  page.interpretation = new Interpretation(config, {
    onStatus: (status) => { setStatus(status); page.updateSaveState(); page.overlay.schedule(); },
    suggestionSource: () => store,
  });
  setStatus(state.status);
  page.start();
}

if (window.OpenSeadragon) init();
else window.addEventListener("DOMContentLoaded", init);
export { confidenceOf };
