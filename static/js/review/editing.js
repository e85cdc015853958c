// Changing cells: every action is saved at once with the cell's version (saves run one after
// another, so each sends the version the previous one returned), with undo and redo that survive
// a reload; the review actions (accept, relabel, reject, add) and the mouse on the viewer (select,
// move or resize a box, draw a new one).
import { api, ApiError, toast } from "../api.js";

const $ = (id) => document.getElementById(id);
const url = (template, id) => template.replace("{id}", String(id));

function fields(cell, names) {
  const map = { current_class: cell.cls, review_status: cell.status, x: cell.x, y: cell.y, width: cell.w, height: cell.h };
  return Object.fromEntries(names.map((n) => [n, map[n]]));
}

function reviewedStatus(cell, cls) {
  if (!cell.pred) return "added"; // drawn by a reviewer: no prediction to confirm
  return cls === cell.pred ? "confirmed" : "relabelled";
}

/** The editing functions of the review page. `page` gives the config, state, store and the other
 * parts (overlay, gallery, interpretation, select, next, renderCell, setStatus, refreshSlide). */
export function createEditing(page) {
  const { config, state, store, editable } = page;

  // --- Saving, undo and redo ------------------------------------------------------------------

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
        page.refreshSlide();
      } else {
        toast(`Not saved: ${err.message}`, "error", 8000);
      }
      if (store.byId.get(id)) page.renderCell();
      throw err;
    } finally {
      page.overlay.schedule();
      page.gallery.render();
    }
  }

  function change(id, changes, names) {
    if (!editable()) return Promise.resolve();
    return enqueue(async () => {
      const cell = store.byId.get(id);
      const before = fields(cell, names);
      const data = await patchCell(id, changes);
      if (state.status === "analysed") page.setStatus("in_review"); // the first change starts the review
      state.undo.push({ kind: "edit", id, before, after: fields(store.byId.get(id), names) });
      state.redo = [];
      if (state.selected === id) page.renderCell();
      page.interpretation?.refreshSuggestion();
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
      page.select(action.id);
      page.interpretation?.refreshSuggestion();
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
      page.select(action.id);
      page.interpretation?.refreshSuggestion();
    });
    updateSaveState();
  }

  // --- The review actions on the selected cell --------------------------------------------------

  function accept() {
    const cell = state.selected && store.byId.get(state.selected);
    if (!cell) return;
    const status = reviewedStatus(cell, cell.cls);
    if (status !== cell.status) change(cell.id, { review_status: status }, ["current_class", "review_status"]);
    page.next();
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
    page.next();
  }

  function addCell(box) {
    if (!editable()) return;
    const cls = $("draw-class").value;
    enqueue(async () => {
      try {
        const data = await api(config.urls.cells, { method: "POST", body: { ...box, current_class: cls } });
        store.upsert(data);
        if (state.status === "analysed") page.setStatus("in_review");
        state.undo.push({ kind: "add", id: data.id });
        state.redo = [];
        page.select(data.id);
        toast(`Cell #${data.id} added as ${cls}. Press 1–6 to change its class.`, "ok", 3000);
        page.interpretation?.refreshSuggestion();
        page.gallery.render();
      } catch (err) {
        toast(`Not added: ${err.message}`, "error", 8000);
      }
    });
  }

  // --- Mouse: select, move/resize, draw -------------------------------------------------------

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
    const overlay = page.overlay;
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
    const overlay = page.overlay;
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
    const overlay = page.overlay;
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
    const cell = page.overlay.hit(e.position);
    page.select(cell ? cell.id : null);
  }

  function setDrawMode(on) {
    state.drawMode = on && editable();
    $("viewer-wrap").classList.toggle("drawing", state.drawMode);
    $("mode").hidden = !state.drawMode;
    $("draw-btn").setAttribute("aria-pressed", String(state.drawMode));
    if (page.viewer) page.viewer.setMouseNavEnabled(true);
  }

  return {
    restoreHistory, updateSaveState, change, undo, redo, accept, relabel, reject, setDrawMode,
    mouse: { onPress, onDrag, onRelease, onClick },
  };
}
