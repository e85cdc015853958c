// The review page's keyboard map (the help dialog, opened with ? or its button, lists it).
import { toast } from "../api.js";
import { toggleSetAside } from "./setaside.js";
import { goHome, setPlane, zoomBy } from "./viewer.js";

const $ = (id) => document.getElementById(id);

export function toggleHelp(open) {
  const help = $("help");
  const show = open ?? !help.classList.contains("open");
  help.classList.toggle("open", show);
  if (show) help.querySelector("[data-close]").focus();
}

/** The nuclear-size ruler (ruler.js): on and off, where the slide says its microns per pixel. */
export function toggleRuler(page) {
  const overlay = page.overlay;
  if (!overlay) return;
  if (!overlay.mpp) {
    toast("This slide does not say its microns per pixel: no ruler.", "info", 3000);
    return;
  }
  overlay.ruler = !overlay.ruler;
  overlay.schedule();
}

/** The keys and the help dialog; `page` gives the actions (editing.js, selection.js). */
export function bindKeys(page) {
  const { config, state, store } = page;

  function onKey(e) {
    const tag = (e.target.tagName || "").toLowerCase();
    if (["input", "textarea", "select"].includes(tag) && e.target.type !== "checkbox" && e.target.type !== "range") {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    const key = e.key;
    const ctrl = e.ctrlKey || e.metaKey;
    if (ctrl && (key === "z" || key === "Z")) { e.preventDefault(); if (e.shiftKey) page.redo(); else page.undo(); return; }
    if (ctrl && (key === "y" || key === "Y")) { e.preventDefault(); page.redo(); return; }
    if (ctrl || e.altKey) return;
    if (key === "?") { toggleHelp(); e.preventDefault(); return; }
    if (key === "Escape") {
      if ($("help").classList.contains("open")) toggleHelp(false);
      else if (state.drawMode) page.setDrawMode(false);
      else page.select(null);
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
    const { next, prev, accept, reject, nextFlagged } = page;
    const toggleDraw = () => page.setDrawMode(!state.drawMode);
    const handled = {
      n: next, N: next, ArrowRight: next, ArrowDown: next,
      p: prev, P: prev, ArrowLeft: prev, ArrowUp: prev,
      Enter: accept, a: accept, A: accept,
      r: reject, R: reject, Delete: reject, Backspace: reject,
      d: toggleDraw, D: toggleDraw,
      "+": () => zoomBy(page.viewer, 1.5), "=": () => zoomBy(page.viewer, 1.5),
      "-": () => zoomBy(page.viewer, 1 / 1.5), 0: () => goHome(page.viewer),
      z: () => { const c = store.byId.get(state.selected); if (c) page.panTo(c, true); },
      u: nextFlagged, U: nextFlagged,
      m: () => toggleRuler(page), M: () => toggleRuler(page),
      s: () => toggleSetAside(page), S: () => toggleSetAside(page),
      j: () => page.gallery.step(1), J: () => page.gallery.step(1),
      k: () => page.gallery.step(-1), K: () => page.gallery.step(-1),
      g: () => page.gallery.nextGroup(), G: () => page.gallery.nextGroup(),
      "[": () => setPlane(page, (state.plane || 0) - 1), "]": () => setPlane(page, (state.plane || 0) + 1),
      PageUp: () => setPlane(page, (state.plane || 0) - 1), PageDown: () => setPlane(page, (state.plane || 0) + 1),
    }[key];
    if (/^[1-6]$/.test(key) && !e.shiftKey) {
      page.relabel(config.classes[Number(key) - 1]);
      e.preventDefault();
      return;
    }
    if (handled) { handled(); e.preventDefault(); }
  }

  document.addEventListener("keydown", onKey);
  $("help-btn").addEventListener("click", () => toggleHelp(true));
  $("help").addEventListener("click", (e) => { if (e.target === $("help") || e.target.closest("[data-close]")) toggleHelp(false); });
}
