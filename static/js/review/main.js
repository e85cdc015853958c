// Slide review page: OpenSeadragon viewer over Deep Zoom tiles, the cell overlay, keyboard review
// with undo/redo (every action saved at once with the cell's version), the flagged-cell counter,
// the ranked gallery (gallery.js) and the interpretation panel.
import { api, ApiError, el, toast } from "../api.js";
import { CellStore, Overlay, confidenceOf, swatchSvg } from "./cells.js";
import { bindDisplay } from "./display.js";
import { Flags, Sightings } from "./flags.js";
import { Gallery } from "./gallery.js";
import { Interpretation } from "./interpretation.js";

const config = JSON.parse(document.getElementById("review-config").textContent);
const $ = (id) => document.getElementById(id);
const url = (template, id) => template.replace("{id}", String(id));
const IN_PROGRESS = new Set(["uploaded", "queued", "analysing"]);
const REVIEWABLE = new Set(["analysed", "in_review", "referred"]); // as the server's REVIEWABLE_STATUSES
const STATUS_LABELS = {
  uploaded: "Uploaded", queued: "Queued for analysis", analysing: "Analysing", analysed: "Analysed",
  in_review: "In review", referred: "Referred", signed_out: "Signed out", failed: "Failed",
};
// What a cell's review status means, in the server's words (the fallback for an older server).
const REVIEW_STATUS_LABELS = config.reviewStatusLabels || {
  predicted: "Predicted (not reviewed)", confirmed: "Confirmed", relabelled: "Relabelled", rejected: "Rejected",
  added: "Added by a reviewer", cleared: "Reviewed: not abnormal",
};
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
const flags = new Flags(store, config.review?.flagThreshold ?? 0.5);
const sightings = new Sightings(config.urls.sightings);
window.__review = state; // for tests and the benchmark
let overlay = null;
let viewer = null;
let interpretation = null;
let gallery = null;

function editable() {
  return config.user.canWrite && REVIEWABLE.has(state.status);
}

function setStatus(status) {
  state.status = status;
  const badge = $("slide-status");
  badge.className = `badge status-${status}`;
  badge.textContent = STATUS_LABELS[status] || status;
  document.body.dataset.slideStatus = status;
  document.body.classList.toggle("read-only", !editable());
  $("draw-btn").disabled = !editable();
  if (overlay) { overlay.editable = editable(); overlay.schedule(); }
  $("reanalyse-btn").hidden = !config.user.canWrite || !["analysed", "in_review", "failed"].includes(status);
  renderCell();
  gallery?.updateButton();
}

async function reanalyse() {
  const button = $("reanalyse-btn");
  button.disabled = true;
  try {
    await api(config.urls.analyze, { method: "POST", body: {} });
    toast("Analysis queued again. Reviewed cells are kept; the rest are replaced when it ends.", "ok", 5000);
    setStatus("queued");
    $("analysis-progress").hidden = false;
    setTimeout(refreshSlide, 1000);
  } catch (err) {
    toast(err.message, "error", 8000);
  } finally {
    button.disabled = false;
  }
}

// --- Viewer ---------------------------------------------------------------------------------

function startViewer() {
  viewer = window.OpenSeadragon({
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
  });
  overlay = new Overlay(viewer, $("overlay"), store, config.colours);
  state.overlay = overlay;
  state.viewer = viewer;
  overlay.onDrawn = (n, scale) => {
    $("hud").textContent = `${n.toLocaleString()} cell${n === 1 ? "" : "s"} in view of ${store.cells.length.toLocaleString()} · ${(scale * 100).toFixed(scale < 0.1 ? 1 : 0)}%`;
    if (state.cellsLoaded && window.__cellsDrawnAt === undefined) {
      window.__cellsDrawnAt = performance.now();
      performance.mark("cells-drawn");
    }
  };
  viewer.addHandler("open", () => { state.viewerOpen = true; overlay.schedule(); });
  viewer.addHandler("open-failed", (e) => toast(`The slide image cannot be shown: ${e.message || "tile server error"}.`, "error", 10000));
  viewer.addHandler("canvas-click", onClick);
  viewer.addHandler("canvas-press", onPress);
  viewer.addHandler("canvas-drag", onDrag);
  viewer.addHandler("canvas-drag-end", (e) => { if (state.drag) e.preventDefaultAction = true; });
  viewer.addHandler("canvas-release", onRelease);
}

function panTo(cell, zoomIn = false) {
  // Centre the cell; zoom in until it is about an eighth of the view wide (never out, unless it
  // does not fit), so a reviewer sees it at a useful magnification.
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

// --- Selection and the cell card --------------------------------------------------------------

function select(id, { pan = false } = {}) {
  const cell = id === null ? null : store.byId.get(id);
  overlay.selected = cell ? cell.id : null;
  state.selected = overlay.selected;
  if (cell && pan) panTo(cell);
  renderCell();
  gallery.mark(state.selected);
  overlay.schedule();
  if (cell) {
    loadDetail(cell.id);
    sightings.record([cell.id], "selected"); // in the background; never holds the page up
  }
}

async function loadDetail(id) {
  try {
    const data = await api(url(config.urls.cell, id));
    if (state.selected !== id) return;
    const cell = store.byId.get(id);
    cell.probabilities = data.probabilities;
    cell.detection_score = data.detection_score;
    if (data.version > cell.version) store.upsert(data);
    renderCell();
  } catch (err) { /* the card shows what we have */ }
}

function renderCell() {
  const cell = state.selected ? store.byId.get(state.selected) : null;
  $("cell-empty").hidden = Boolean(cell);
  $("cell-detail").hidden = !cell;
  const canEdit = editable();
  for (const b of document.querySelectorAll("#cell-actions [data-action=accept], #cell-actions [data-action=reject], #relabel button")) b.disabled = !canEdit;
  if (!cell) return;
  const img = $("cell-crop");
  const src = `${url(config.urls.crop, cell.id)}?v=${cell.version}&pad=24`;
  if (img.getAttribute("src") !== src) img.src = src;
  const label = [el("span", { class: "cls", "data-class": cell.cls, text: cell.cls })];
  if (cell.pred && cell.pred !== cell.cls) label.push(el("span", { class: "source", text: ` (model: ${cell.pred})` }));
  if (!cell.pred) label.push(el("span", { class: "source", text: " (drawn by a reviewer)" }));
  $("cell-class").replaceChildren(...label);
  const flag = flags.isUndecided(cell) ? " · flagged" : "";
  $("cell-status").textContent = `#${cell.id} · ${statusLabel(cell.status)}${flag} · v${cell.version}`;
  const probs = $("cell-probs");
  probs.innerHTML = "";
  const p = cell.probabilities || {};
  for (const code of config.classes) {
    const v = Number(p[code] || 0);
    probs.append(el("div", { class: `prob${code === cell.cls ? " current" : ""}` },
      el("span", { class: "cls", "data-class": code, text: code }),
      el("span", { class: "bar" }, el("span", { style: `width:${(v * 100).toFixed(1)}%;background:${config.colours[code]}` })),
      el("span", { class: "v", text: cell.probabilities ? `${(v * 100).toFixed(0)}%` : "–" })));
  }
  for (const b of document.querySelectorAll("#relabel button")) b.classList.toggle("active", b.dataset.relabel === cell.cls);
}

// --- Saving, undo and redo --------------------------------------------------------------------

function fields(cell, names) {
  const map = { current_class: cell.cls, review_status: cell.status, x: cell.x, y: cell.y, width: cell.w, height: cell.h };
  return Object.fromEntries(names.map((n) => [n, map[n]]));
}

// The undo and redo stacks survive a reload of the page (per browser tab, per slide).
const historyKey = `papreview-history:${config.slide.id}`;

function saveHistory() {
  try {
    sessionStorage.setItem(historyKey, JSON.stringify({ undo: state.undo.slice(-200), redo: state.redo.slice(-200) }));
  } catch (err) { /* storage full or disabled: the history lives in memory only */ }
}

function restoreHistory() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(historyKey) || "null");
    if (saved) { state.undo = saved.undo || []; state.redo = saved.redo || []; }
  } catch (err) { /* ignore a damaged entry */ }
}

function updateSaveState() {
  saveHistory();
  $("save-state").textContent = state.inFlight ? "Saving…" : (state.lastSaved ? `All changes saved ${state.lastSaved}` : "");
  $("undo-btn").disabled = !state.undo.length || !editable();
  $("redo-btn").disabled = !state.redo.length || !editable();
}

/** Queue a save; saves run one after another so each sends the version the previous returned. */
function enqueue(work) {
  state.inFlight += 1;
  updateSaveState();
  state.saving = state.saving.then(work).catch(() => {}).finally(() => {
    state.inFlight -= 1;
    state.lastSaved = new Date().toLocaleTimeString();
    updateSaveState();
  });
  return state.saving;
}

async function patchCell(id, changes) {
  const cell = store.byId.get(id);
  try {
    const data = await api(url(config.urls.cell, id), { method: "PATCH", body: { version: cell.version, ...changes } });
    store.upsert(data);
    return data;
  } catch (err) {
    if (err instanceof ApiError && err.status === 409 && err.body.current) {
      store.upsert(err.body.current);
      toast(`Cell #${id} was changed by someone else, so it was reloaded as it is now. Check it and apply your change again.`, "warn", 9000);
    } else if (err instanceof ApiError && err.code === "slide_not_reviewable") {
      toast(err.message, "error", 8000);
      refreshSlide();
    } else {
      toast(`Not saved: ${err.message}`, "error", 8000);
    }
    if (store.byId.get(id)) renderCell();
    throw err;
  } finally {
    overlay.schedule();
    gallery.render();
  }
}

function change(id, changes, names) {
  if (!editable()) return Promise.resolve();
  return enqueue(async () => {
    const cell = store.byId.get(id);
    const before = fields(cell, names);
    const data = await patchCell(id, changes);
    if (state.status === "analysed") setStatus("in_review"); // the first change starts the review
    state.undo.push({ kind: "edit", id, before, after: fields(store.byId.get(id), names) });
    state.redo = [];
    if (state.selected === id) renderCell();
    interpretation?.refreshSuggestion();
    return data;
  });
}

function undo() {
  if (!editable() || !state.undo.length) return;
  const action = state.undo.pop();
  enqueue(async () => {
    try {
      if (action.kind === "add") await patchCell(action.id, { review_status: "rejected" });
      else await patchCell(action.id, action.before);
      state.redo.push(action);
      toast("Undone.", "info", 1500);
    } catch (err) { /* told in patchCell */ }
    select(action.id);
    interpretation?.refreshSuggestion();
  });
  updateSaveState();
}

function redo() {
  if (!editable() || !state.redo.length) return;
  const action = state.redo.pop();
  enqueue(async () => {
    try {
      if (action.kind === "add") await patchCell(action.id, { review_status: "added" });
      else await patchCell(action.id, action.after);
      state.undo.push(action);
      toast("Redone.", "info", 1500);
    } catch (err) { /* told in patchCell */ }
    select(action.id);
    interpretation?.refreshSuggestion();
  });
  updateSaveState();
}

function reviewedStatus(cell, cls) {
  if (!cell.pred) return "added"; // drawn by a reviewer: no prediction to confirm
  return cls === cell.pred ? "confirmed" : "relabelled";
}

function accept() {
  const cell = state.selected && store.byId.get(state.selected);
  if (!cell) return;
  const status = reviewedStatus(cell, cell.cls);
  if (status !== cell.status) change(cell.id, { review_status: status }, ["current_class", "review_status"]);
  next();
}

function relabel(cls) {
  const cell = state.selected && store.byId.get(state.selected);
  if (!cell) return;
  const changes = { current_class: cls };
  if (cell.status === "rejected") changes.review_status = reviewedStatus(cell, cls);
  change(cell.id, changes, ["current_class", "review_status"]);
}

function reject() {
  const cell = state.selected && store.byId.get(state.selected);
  if (!cell || cell.status === "rejected") return;
  change(cell.id, { review_status: "rejected" }, ["current_class", "review_status"]);
  next();
}

function addCell(box) {
  if (!editable()) return;
  const cls = $("draw-class").value;
  enqueue(async () => {
    try {
      const data = await api(config.urls.cells, { method: "POST", body: { ...box, current_class: cls } });
      store.upsert(data);
      if (state.status === "analysed") setStatus("in_review");
      state.undo.push({ kind: "add", id: data.id });
      state.redo = [];
      select(data.id);
      toast(`Cell #${data.id} added as ${cls}. Press 1–6 to change its class.`, "ok", 3000);
      interpretation?.refreshSuggestion();
      gallery.render();
    } catch (err) {
      toast(`Not added: ${err.message}`, "error", 8000);
    }
  });
}

// --- Navigation -------------------------------------------------------------------------------

function order() {
  return store.ranked();
}

function step(delta) {
  const list = order();
  if (!list.length) return;
  let i = list.findIndex((c) => c.id === state.selected);
  i = i < 0 ? (delta > 0 ? 0 : list.length - 1) : (i + delta + list.length) % list.length;
  select(list[i].id, { pan: true });
}
function next() { step(1); }
function prev() { step(-1); }

/** U: the next flagged cell nobody has decided, most suspicious first. */
function nextFlagged() {
  const cell = flags.next(state.selected);
  if (!cell) { toast("All flagged cells reviewed.", "ok", 3000); return; }
  select(cell.id, { pan: true });
}

// --- Flagged cells: how many, how many decided ------------------------------------------------

let counterFrame = null;
function renderFlagCounter() {
  if (counterFrame !== null) return; // once per frame, however many cells changed
  counterFrame = requestAnimationFrame(() => {
    counterFrame = null;
    const { flagged, reviewed } = flags.counts();
    const button = $("flag-counter");
    const left = flagged - reviewed;
    button.querySelector(".text").textContent = `Flagged: ${flagged.toLocaleString()} · reviewed: ${reviewed.toLocaleString()}`;
    button.classList.toggle("incomplete", left > 0);
    button.classList.toggle("complete", flagged > 0 && left === 0);
    button.setAttribute("aria-label", left
      ? `${flagged} flagged cells, ${reviewed} reviewed, ${left} left: go to the next one (U)`
      : `${flagged} flagged cells, all reviewed`);
    gallery.updateButton();
  });
}

// --- Mouse: select, move/resize, draw ---------------------------------------------------------

function clampBox(b) {
  let { x, y, w, h } = b;
  if (w < 0) { x += w; w = -w; }
  if (h < 0) { y += h; h = -h; }
  x = Math.max(0, Math.round(x));
  y = Math.max(0, Math.round(y));
  w = Math.max(1, Math.min(Math.round(w), store.width - x));
  h = Math.max(1, Math.min(Math.round(h), store.height - y));
  return { x, y, w, h };
}

function onPress(e) {
  if (!editable()) return;
  const p = overlay.toImage(e.position);
  if (state.drawMode) {
    state.drag = { mode: "draw", start: p };
    return;
  }
  const grab = overlay.grab(e.position);
  if (grab) state.drag = { mode: grab.mode, start: p, cell: grab.cell, orig: { x: grab.cell.x, y: grab.cell.y, w: grab.cell.w, h: grab.cell.h } };
}

function onDrag(e) {
  if (!state.drag) return;
  e.preventDefaultAction = true;
  const d = state.drag;
  const p = overlay.toImage(e.position);
  const dx = p.x - d.start.x, dy = p.y - d.start.y;
  let box;
  if (d.mode === "draw") box = { x: d.start.x, y: d.start.y, w: dx, h: dy };
  else if (d.mode === "move") box = { ...d.orig, x: d.orig.x + dx, y: d.orig.y + dy };
  else {
    const o = d.orig;
    let x0 = o.x, y0 = o.y, x1 = o.x + o.w, y1 = o.y + o.h;
    if (d.mode.includes("w")) x0 += dx; else x1 += dx;
    if (d.mode.includes("n")) y0 += dy; else y1 += dy;
    box = { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
  }
  d.moved = true;
  overlay.draft = { ...clampBox(box), cls: d.mode === "draw" ? $("draw-class").value : d.cell.cls };
  overlay.schedule();
}

function onRelease() {
  const d = state.drag;
  if (!d) return;
  state.drag = null;
  const box = overlay.draft;
  overlay.draft = null;
  state.justDragged = Boolean(d.moved);
  if (!d.moved || !box) { overlay.schedule(); return; }
  if (d.mode === "draw") {
    setDrawMode(false);
    if (box.w >= 4 && box.h >= 4) addCell({ x: box.x, y: box.y, width: box.w, height: box.h });
    else toast("The box is too small; drag a larger one.", "warn", 2500);
  } else {
    const c = d.cell;
    if (box.x !== c.x || box.y !== c.y || box.w !== c.w || box.h !== c.h) {
      change(c.id, { x: box.x, y: box.y, width: box.w, height: box.h }, ["x", "y", "width", "height", "review_status"]);
    }
  }
  overlay.schedule();
}

function onClick(e) {
  e.preventDefaultAction = true;
  if (state.justDragged) { state.justDragged = false; return; }
  if (!e.quick || state.drawMode) return;
  const cell = overlay.hit(e.position);
  select(cell ? cell.id : null);
}

function setDrawMode(on) {
  state.drawMode = on && editable();
  $("viewer-wrap").classList.toggle("drawing", state.drawMode);
  $("mode").hidden = !state.drawMode;
  $("draw-btn").setAttribute("aria-pressed", String(state.drawMode));
  if (viewer) viewer.setMouseNavEnabled(true);
}

// --- Legend and filters -----------------------------------------------------------------------

function renderCounts() {
  const counts = store.counts();
  for (const span of document.querySelectorAll("[data-count]")) span.textContent = (counts[span.dataset.count] || 0).toLocaleString();
}

function bindControls() {
  $("legend").addEventListener("change", (e) => {
    const box = e.target.closest("input[data-class]");
    if (!box) return;
    store.classOn[box.dataset.class] = box.checked;
    box.closest("label").classList.toggle("off", !box.checked);
    overlay.schedule();
  });
  $("confidence").addEventListener("input", (e) => {
    store.minConfidence = Number(e.target.value);
    $("confidence-out").textContent = store.minConfidence.toFixed(2);
    overlay.schedule();
  });
  $("show-rejected").addEventListener("change", (e) => { store.showRejected = e.target.checked; overlay.schedule(); });
  $("draw-btn").addEventListener("click", () => setDrawMode(!state.drawMode));
  $("flag-counter").addEventListener("click", (e) => { e.currentTarget.blur(); nextFlagged(); });
  $("cell-actions").addEventListener("click", (e) => {
    const button = e.target.closest("[data-action]");
    if (!button) return;
    button.blur();
    ({ accept, reject, next, prev })[button.dataset.action]?.();
  });
  $("relabel").addEventListener("click", (e) => {
    const b = e.target.closest("[data-relabel]");
    if (!b) return;
    b.blur();
    relabel(b.dataset.relabel);
  });
  $("reanalyse-btn").addEventListener("click", reanalyse);
  $("undo-btn").addEventListener("click", undo);
  $("redo-btn").addEventListener("click", redo);
  $("help-btn").addEventListener("click", () => toggleHelp(true));
  $("help").addEventListener("click", (e) => { if (e.target === $("help") || e.target.closest("[data-close]")) toggleHelp(false); });
  window.addEventListener("beforeunload", (e) => { if (state.inFlight) { e.preventDefault(); e.returnValue = ""; } });
}

function toggleHelp(open) {
  const help = $("help");
  const show = open ?? !help.classList.contains("open");
  help.classList.toggle("open", show);
  if (show) help.querySelector("[data-close]").focus();
}

// --- Keyboard ---------------------------------------------------------------------------------

function onKey(e) {
  const tag = (e.target.tagName || "").toLowerCase();
  if (["input", "textarea", "select"].includes(tag) && e.target.type !== "checkbox" && e.target.type !== "range") {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  const key = e.key;
  const ctrl = e.ctrlKey || e.metaKey;
  if (ctrl && (key === "z" || key === "Z")) { e.preventDefault(); if (e.shiftKey) redo(); else undo(); return; }
  if (ctrl && (key === "y" || key === "Y")) { e.preventDefault(); redo(); return; }
  if (ctrl || e.altKey) return;
  if (key === "?") { toggleHelp(); e.preventDefault(); return; }
  if (key === "Escape") {
    if ($("help").classList.contains("open")) toggleHelp(false);
    else if (state.drawMode) setDrawMode(false);
    else select(null);
    return;
  }
  if (document.querySelector(".modal-backdrop.open")) return; // a dialog has the keys
  // Shift+1..6 toggle classes (the shifted characters differ by layout: use the key code).
  const digit = /^Digit([1-6])$/.exec(e.code || "");
  if (e.shiftKey && digit) {
    const box = document.querySelector(`#legend input[data-class="${config.classes[Number(digit[1]) - 1]}"]`);
    box.checked = !box.checked;
    box.dispatchEvent(new Event("change", { bubbles: true }));
    e.preventDefault();
    return;
  }
  if (tag === "button" && (key === "Enter" || key === " ")) return; // let buttons work
  if (key === "N" && e.shiftKey) {
    const link = $("next-slide");
    if (link) window.location = link.href;
    else toast("No other slide is waiting for review.", "info", 3000);
    e.preventDefault();
    return;
  }
  const handled = {
    n: next, N: next, ArrowRight: next, ArrowDown: next,
    p: prev, P: prev, ArrowLeft: prev, ArrowUp: prev,
    Enter: accept, a: accept, A: accept,
    r: reject, R: reject, Delete: reject, Backspace: reject,
    d: () => setDrawMode(!state.drawMode), D: () => setDrawMode(!state.drawMode),
    "+": () => viewer.viewport.zoomBy(1.5), "=": () => viewer.viewport.zoomBy(1.5),
    "-": () => viewer.viewport.zoomBy(1 / 1.5), 0: () => viewer.viewport.goHome(),
    z: () => { const c = store.byId.get(state.selected); if (c) panTo(c, true); },
    u: nextFlagged, U: nextFlagged,
  }[key];
  if (/^[1-6]$/.test(key) && !e.shiftKey) {
    relabel(config.classes[Number(key) - 1]);
    e.preventDefault();
    return;
  }
  if (handled) { handled(); e.preventDefault(); }
}

// --- Loading ----------------------------------------------------------------------------------

async function loadCells() {
  const t0 = performance.now();
  const layer = await api(config.urls.cellLayer);
  state.layerAsOf = layer.as_of;
  store.load(layer);
  state.cellsLoaded = true;
  state.cellsLoadMs = performance.now() - t0;
  renderCounts();
  overlay.schedule();
  // The gallery's crops wait until the cells are drawn, so they do not compete with the tiles.
  requestAnimationFrame(() => setTimeout(() => gallery.renderNow(), 150));
}

// Other reviewers' changes: every few seconds, the cells changed since the last look (with a
// few seconds of overlap, so a change committed late is not missed; versions decide).
const WATCH_MS = window.__reviewWatchMs || 10_000; // (tests make it shorter)
async function watchOthers() {
  try {
    if (state.cellsLoaded && !state.inFlight && !state.drag && document.visibilityState === "visible") {
      const since = new Date(new Date(state.layerAsOf).getTime() - 5000).toISOString();
      const layer = await api(`${config.urls.cellLayer}?since=${encodeURIComponent(since)}`);
      state.layerAsOf = layer.as_of;
      if (!state.inFlight) {
        const changed = store.merge(layer);
        if (changed.length) {
          toast(`${changed.length} cell${changed.length === 1 ? " was" : "s were"} changed by another reviewer; the view shows the change.`, "info", 5000);
          overlay.schedule();
          gallery.render();
          if (changed.some((c) => c.id === state.selected)) renderCell();
          interpretation?.refreshSuggestion();
        }
      }
    }
  } catch (err) { /* try again on the next round */ }
  setTimeout(watchOthers, WATCH_MS);
}

async function refreshSlide() {
  try {
    const slide = await api(config.urls.slide);
    const progress = $("analysis-progress");
    const running = IN_PROGRESS.has(slide.status);
    progress.hidden = !running;
    if (running) {
      const pct = slide.progress ?? 0;
      progress.querySelector("span").style.width = `${pct}%`;
      progress.querySelector("[role=progressbar]").setAttribute("aria-valuenow", String(pct));
      progress.querySelector(".pct").textContent = `${pct}%`;
    }
    const was = state.status;
    setStatus(slide.status);
    if (IN_PROGRESS.has(was) && !running) {
      await loadCells();
      interpretation?.load();
    }
    if (running) setTimeout(refreshSlide, 2000);
    if (slide.status === "failed" && slide.failure_reason) $("hud").textContent = `Analysis failed: ${slide.failure_reason}`;
  } catch (err) {
    setTimeout(refreshSlide, 4000);
  }
}

function init() {
  restoreHistory();
  gallery = new Gallery({
    config, store, flags, sightings, statusLabel, editable,
    onSelect: (id) => select(id, { pan: true }),
    onCleared: (changed, { refresh = false } = {}) => {
      if (refresh) { refreshSlide(); return; }
      if (changed.length && state.status === "analysed") setStatus("in_review");
      if (changed.some((c) => c.id === state.selected)) renderCell();
      overlay.schedule();
      interpretation?.refreshSuggestion();
    },
  });
  bindControls();
  for (const sw of document.querySelectorAll("#legend .sw[data-class]")) {
    sw.replaceWith(swatchSvg(sw.dataset.class, config.colours[sw.dataset.class]));
  }
  store.onChange(() => { renderCounts(); renderFlagCounter(); });
  startViewer();
  bindDisplay(overlay);
  document.addEventListener("keydown", onKey);
  interpretation = new Interpretation(config, {
    onStatus: (status) => { setStatus(status); updateSaveState(); overlay.schedule(); },
    suggestionSource: () => store,
  });
  setStatus(state.status);
  loadCells().catch((err) => toast(`Cells could not be loaded: ${err.message}`, "error", 10000));
  interpretation.load();
  if (IN_PROGRESS.has(state.status)) setTimeout(refreshSlide, 1500);
  setTimeout(watchOthers, WATCH_MS);
}

if (window.OpenSeadragon) init();
else window.addEventListener("DOMContentLoaded", init);
export { confidenceOf };
