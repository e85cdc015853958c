// The selected cell: its card (crop, class, status, probabilities), moving from cell to cell (most
// suspicious first; U for the next flagged cell nobody has decided) and the flagged-cell counter.
import { api, el, toast } from "../api.js";
import { panTo } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const url = (template, id) => template.replace("{id}", String(id));

/** `page` gives the config, state, store, flags, sightings and the overlay, viewer and gallery. */
export function createSelection(page) {
  const { config, state, store, flags, sightings, editable, statusLabel } = page;

  function select(id, { pan = false } = {}) {
    const overlay = page.overlay;
    const cell = id === null ? null : store.byId.get(id);
    overlay.selected = cell ? cell.id : null;
    state.selected = overlay.selected;
    if (cell && pan) panTo(page.viewer, cell);
    renderCell();
    page.gallery.mark(state.selected);
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

  // --- Navigation -----------------------------------------------------------------------------

  function step(delta) {
    const list = store.ranked();
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

  // --- Flagged cells: how many, how many decided ----------------------------------------------

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
      page.gallery.updateButton();
    });
  }

  return {
    select, renderCell, next, prev, nextFlagged, renderFlagCounter,
    panTo: (cell, zoomIn = false) => panTo(page.viewer, cell, zoomIn),
  };
}
