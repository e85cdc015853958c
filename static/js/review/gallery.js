// The gallery of the most suspicious cells: every crop at one physical magnification (FOV_UM
// micrometres across THUMB_PX pixels, read by the server at the pyramid level that matches, shown
// at its own pixels, never enlarged) with a scale. The N most suspicious are grouped by class,
// the groups in the order of their most suspicious cell (so the first crop is still the most
// suspicious cell), ranked within. Each crop says whether it was seen and whether a person
// decided it (a dot on flagged cells nobody decided); J / K step through the crops in that order
// and G jumps to the next class, each selecting the cell and centring the viewer on it, as a
// click does. The crops actually seen are recorded as sightings, and "reviewed, none abnormal"
// applies to the flagged cells the reviewer has seen.
import { api, ApiError, el, toast } from "../api.js";
import { formatMicrons } from "./density.js";

export const FOV_UM = 80; // micrometres across each crop: the largest squamous cells fit
export const THUMB_PX = 144; // its side, CSS pixels and image pixels alike (0.56 µm per pixel)
const MAX_H = 150; // CSS pixels: the strip's height for the image
const SEEN_SCALE = 0.5; // shown at least this large (vs its own pixels) to count as seen
const SEEN_DWELL_MS = 400; // and on screen this long: a crop flung past is not "seen"
const PAGE = 48; // crops shown at first (the "Show" choice), and added by "Show more"

const $ = (id) => document.getElementById(id);
const url = (template, id) => template.replace("{id}", String(id));

export class Gallery {
  constructor({ config, store, flags, sightings, statusLabel, editable, onSelect, onCleared }) {
    Object.assign(this, { config, store, flags, sightings, statusLabel, editable, onSelect, onCleared });
    this.strip = $("gallery");
    this.filter = $("gallery-filter");
    this.button = $("clear-seen-btn");
    this.dialog = $("clear-dialog");
    this.size = $("gallery-n");
    this.page = Number(this.size?.value) || PAGE;
    this.limit = this.page;
    this.selected = null;
    this.shown = []; // the cells whose crops are in the strip now
    this.timer = null;
    this.dwell = new Map(); // thumb -> timer while it is in view
    this.observer = "IntersectionObserver" in window
      ? new IntersectionObserver((entries) => this.onIntersect(entries), { root: this.strip, threshold: [0, 0.6] })
      : null;
    this.filter.addEventListener("change", () => { this.limit = this.page; this.renderNow(); });
    this.size?.addEventListener("change", () => {
      this.page = Number(this.size.value) || PAGE;
      this.limit = this.page;
      this.size.blur(); // keep the digit keys for the review
      this.renderNow();
    });
    this.renderScale();
    this.strip.addEventListener("click", (e) => {
      const b = e.target.closest(".thumb");
      if (!b) return;
      b.blur(); // keep Enter, A, R, 1-6 for the review keys
      this.onSelect(Number(b.dataset.cell));
    });
    this.strip.addEventListener("load", (e) => {
      const thumb = e.target.closest?.(".thumb");
      if (thumb && thumb.dataset.inView === "1") this.startDwell(thumb);
    }, true); // load does not bubble: listen while it goes down
    sightings.onChange = () => { this.updateButton(); this.markSeen(); };
    if (this.button) this.button.addEventListener("click", () => { this.button.blur(); this.askClear(); });
    this.bindDialog();
  }

  cells() {
    const f = this.filter.value;
    const s = this.store;
    if (f === "flagged") return s.ranked((c) => this.flags.isUndecided(c));
    if (f === "rejected") return s.ranked((c) => c.status === "rejected");
    if (f === "reviewed") return s.ranked((c) => c.status !== "rejected" && this.flags.isDecided(c));
    if (f === "*") return s.ranked((c) => c.status !== "rejected");
    if (f) return s.ranked((c) => c.status !== "rejected" && c.cls === f);
    return s.ranked((c) => c.status !== "rejected" && c.cls !== "NILM");
  }

  render() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.renderNow(), 60);
  }

  renderNow() {
    clearTimeout(this.timer);
    const cells = this.cells();
    const label = this.filter.value === "flagged" ? "flagged, not reviewed" : "ranked by severity × confidence";
    $("gallery-count").textContent = `${cells.length.toLocaleString()} cell${cells.length === 1 ? "" : "s"}, ${label}`;
    const groups = groupByClass(cells.slice(0, this.limit));
    this.shown = groups.flatMap(([, members]) => members); // the order of the strip (J / K)
    if (this.observer) this.observer.disconnect();
    for (const t of this.dwell.values()) clearTimeout(t);
    this.dwell.clear();
    const thumbs = [];
    const items = [];
    for (const [cls, members] of groups) {
      items.push(el("div", {
        class: "group-head", "data-class": cls, role: "presentation", style: `--swatch:${this.config.colours[cls]}`,
        title: `${members.length} ${cls} crop${members.length === 1 ? "" : "s"}, most suspicious first`,
      }, el("span", { class: "cls-code", text: cls }), el("span", { class: "muted", text: String(members.length) })));
      for (const c of members) {
        const t = this.thumb(c);
        thumbs.push(t);
        items.push(t);
      }
    }
    this.strip.replaceChildren(...items);
    if (cells.length > this.shown.length) {
      this.strip.append(el("button", {
        type: "button", class: "secondary small more", text: `Show ${Math.min(this.page, cells.length - this.shown.length)} more`,
        onclick: () => { this.limit += this.page; this.renderNow(); },
      }));
    }
    if (this.observer) for (const t of thumbs) this.observer.observe(t);
    this.updateButton();
  }

  /** The gallery's scale: micrometres across a crop and a bar of a round length. */
  renderScale() {
    const box = $("gallery-scale");
    if (!box) return;
    const barUm = 20;
    const assumed = this.config.slide.mpp ? "" : " (0.25 µm/px assumed: the slide does not say)";
    box.replaceChildren(
      el("span", { text: `each crop ${formatMicrons(FOV_UM)} across${assumed}` }),
      el("i", { class: "bar", style: `width:${Math.round((THUMB_PX * barUm) / FOV_UM)}px` }),
      el("span", { text: formatMicrons(barUm) }));
  }

  thumb(c) {
    const w = THUMB_PX, h = THUMB_PX;
    const src = `${url(this.config.urls.crop, c.id)}?v=${c.version}&fov=${FOV_UM}&size=${THUMB_PX}`;
    const undecided = this.flags.isUndecided(c);
    const decided = this.flags.isDecided(c);
    const seen = this.sightings.seen(c.id);
    const state = `${undecided ? "flagged, not reviewed" : (decided ? this.statusLabel(c.status) : "not flagged")}${seen ? ", seen" : ""}`;
    const conf = `${(c.conf * 100).toFixed(0)}%`;
    return el("button", {
      type: "button",
      class: `thumb${c.id === this.selected ? " selected" : ""}${c.status === "rejected" ? " rejected" : ""}${undecided ? " undecided" : ""}${decided ? " decided" : ""}${seen ? " seen" : ""}`,
      role: "listitem", "data-cell": c.id, style: `--swatch:${this.config.colours[c.cls]}`,
      title: `#${c.id} ${c.cls} · confidence ${conf} · ${state}`,
      "aria-label": `Cell ${c.id}, ${c.cls}, confidence ${conf}, ${state}`,
    },
    el("span", { class: "pic", style: `width:${Math.max(w, 64)}px;height:${MAX_H}px` },
      el("img", { src, width: w, height: h, loading: "lazy", alt: "", decoding: "async" })),
    el("span", { class: "cap" },
      el("span", { class: "cls-code", text: c.cls }),
      undecided ? el("span", { class: "mark todo", title: "Flagged, not reviewed", "aria-hidden": "true" })
        : (decided ? el("span", { class: "mark done", title: this.statusLabel(c.status), "aria-hidden": "true", text: "✓" }) : null),
      el("span", { class: "seen-tag", title: "Seen", "aria-hidden": "true", text: "seen" }),
      el("span", { class: "muted", text: conf })));
  }

  /** The seen marks, as the sightings change (no new crops fetched). */
  markSeen() {
    for (const b of this.strip.querySelectorAll(".thumb")) {
      const seen = this.sightings.seen(Number(b.dataset.cell));
      if (seen === b.classList.contains("seen")) continue;
      b.classList.toggle("seen", seen);
      b.setAttribute("aria-label", `${b.getAttribute("aria-label").replace(/, seen$/, "")}${seen ? ", seen" : ""}`);
    }
  }

  // --- Keys: J / K the next / previous crop, G the next class --------------------------------

  step(delta) {
    if (!this.shown.length) return;
    let i = this.shown.findIndex((c) => c.id === this.selected);
    i = i < 0 ? (delta > 0 ? 0 : this.shown.length - 1) : (i + delta + this.shown.length) % this.shown.length;
    this.go(this.shown[i].id);
  }

  nextGroup() {
    if (!this.shown.length) return;
    const i = this.shown.findIndex((c) => c.id === this.selected);
    const cls = i < 0 ? null : this.shown[i].cls;
    const j = this.shown.findIndex((c, k) => k > i && c.cls !== cls);
    this.go(this.shown[j < 0 ? 0 : j].id);
  }

  go(id) {
    this.onSelect(id);
    this.strip.querySelector(`.thumb[data-cell="${id}"]`)?.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  mark(selectedId) {
    this.selected = selectedId;
    for (const b of this.strip.querySelectorAll(".thumb")) b.classList.toggle("selected", Number(b.dataset.cell) === selectedId);
  }

  // --- What the reviewer saw ------------------------------------------------------------------

  onIntersect(entries) {
    for (const e of entries) {
      const thumb = e.target;
      const inView = e.isIntersecting && e.intersectionRatio >= 0.6;
      thumb.dataset.inView = inView ? "1" : "0";
      if (inView) this.startDwell(thumb);
      else { clearTimeout(this.dwell.get(thumb)); this.dwell.delete(thumb); }
    }
  }

  startDwell(thumb) {
    const img = thumb.querySelector("img");
    // Seen means the pixels were there, at review size, for a moment, on a page in front.
    if (!img || !img.complete || !img.naturalWidth || this.dwell.has(thumb)) return;
    if (img.clientWidth < img.naturalWidth * SEEN_SCALE) return;
    this.dwell.set(thumb, setTimeout(() => {
      this.dwell.delete(thumb);
      if (thumb.isConnected && thumb.dataset.inView === "1" && document.visibilityState === "visible") {
        this.sightings.record([Number(thumb.dataset.cell)], "gallery");
      }
    }, SEEN_DWELL_MS));
  }

  // --- Reviewed, none abnormal ----------------------------------------------------------------

  /** Undecided flagged cells in the strip that this reviewer has seen; and those not seen yet. */
  candidates() {
    const undecided = this.shown.filter((c) => this.flags.isUndecided(c));
    const seen = undecided.filter((c) => this.sightings.seen(c.id));
    return { seen, unseen: undecided.length - seen.length };
  }

  updateButton() {
    if (!this.button) return;
    const { seen } = this.candidates();
    const can = this.editable() && Boolean(this.config.urls.clearSeen);
    this.button.disabled = !can || !seen.length;
    this.button.querySelector(".n").textContent = seen.length ? ` (${seen.length})` : "";
  }

  askClear() {
    const { seen, unseen } = this.candidates();
    if (!seen.length || !this.editable()) return;
    this.pendingClear = seen.map((c) => c.id);
    const n = seen.length;
    $("clear-dialog-text").textContent = `${n} flagged cell${n === 1 ? "" : "s"} you have seen in the gallery will be marked reviewed: not abnormal (class NILM). Your name is kept on each.`;
    $("clear-dialog-unseen").textContent = unseen
      ? `${unseen} flagged cell${unseen === 1 ? "" : "s"} in the gallery ${unseen === 1 ? "has" : "have"} not been seen at review size yet and stay${unseen === 1 ? "s" : ""} undecided.`
      : "";
    $("clear-dialog-confirm").textContent = `Mark ${n} cell${n === 1 ? "" : "s"} reviewed`;
    this.returnFocus = document.activeElement;
    this.dialog.classList.add("open");
    $("clear-dialog-confirm").focus();
  }

  closeDialog() {
    this.dialog.classList.remove("open");
    const back = this.returnFocus && this.returnFocus.isConnected ? this.returnFocus : null;
    if (back && back !== document.body) back.focus();
  }

  bindDialog() {
    if (!this.dialog) return;
    this.dialog.addEventListener("keydown", (e) => {
      // The dialog's own keys; nothing reaches the review keys while it is open.
      e.stopPropagation();
      if (e.key === "Escape") { e.preventDefault(); this.closeDialog(); }
      else if (e.key === "Enter" && !e.target.closest("[data-cancel]")) { e.preventDefault(); this.confirmClear(); }
      else if (e.key === "Tab") { // keep the focus in the dialog
        const buttons = [...this.dialog.querySelectorAll("button")];
        const i = buttons.indexOf(document.activeElement);
        const next = buttons[(i + (e.shiftKey ? -1 : 1) + buttons.length) % buttons.length];
        next.focus();
        e.preventDefault();
      }
    });
    this.dialog.addEventListener("click", (e) => {
      if (e.target === this.dialog || e.target.closest("[data-cancel]")) this.closeDialog();
      else if (e.target.closest("#clear-dialog-confirm")) this.confirmClear();
    });
  }

  async confirmClear() {
    const ids = this.pendingClear || [];
    this.pendingClear = null;
    this.closeDialog();
    if (!ids.length) return;
    this.button.disabled = true;
    try {
      await this.sightings.flush(); // the server must know what was seen before it is asked
      const answer = await api(this.config.urls.clearSeen, { method: "POST", body: { cells: ids } });
      const changed = answer.cleared.map((row) => this.store.applyChange(row)).filter(Boolean);
      const skipped = answer.skipped.length;
      toast(`${answer.cleared.length} flagged cell${answer.cleared.length === 1 ? "" : "s"} marked reviewed: not abnormal.${skipped ? ` ${skipped} had been changed meanwhile and ${skipped === 1 ? "was" : "were"} left as ${skipped === 1 ? "it is" : "they are"}.` : ""}`, "ok", 5000);
      this.onCleared(changed);
    } catch (err) {
      if (err instanceof ApiError && err.code === "not_seen") {
        const unseen = err.body.unseen_cells || [];
        this.sightings.forget(unseen);
        toast(`Nothing was changed: ${unseen.length} of these cells ${unseen.length === 1 ? "is" : "are"} not recorded as seen by you. Look at them in the gallery, then try again.`, "warn", 9000);
      } else {
        toast(`Not saved: ${err.message}`, "error", 8000);
        if (err instanceof ApiError && err.code === "slide_not_reviewable") this.onCleared([], { refresh: true });
      }
    } finally {
      this.renderNow();
    }
  }
}

/** Ranked cells grouped by class: [class, cells] in the order of each class's first (most
 * suspicious) cell, each group still ranked. */
export function groupByClass(ranked) {
  const groups = new Map();
  for (const c of ranked) {
    const list = groups.get(c.cls);
    if (list) list.push(c); else groups.set(c.cls, [c]);
  }
  return [...groups.entries()];
}
