// How the boxes are drawn (line width, opacity): a reviewer's own taste, so it is kept in this
// browser (localStorage) for every slide, and applied to the overlay as the slider moves.

const KEY = "papreview-display";
const DEFAULTS = { lineWidth: 1.6, opacity: 1 };

function load() {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) || "{}");
    const out = { ...DEFAULTS };
    for (const k of Object.keys(DEFAULTS)) if (Number.isFinite(saved[k])) out[k] = saved[k];
    return out;
  } catch (err) {
    return { ...DEFAULTS }; // storage disabled or a damaged entry
  }
}

function save(values) {
  try { localStorage.setItem(KEY, JSON.stringify(values)); } catch (err) { /* kept for this page only */ }
}

/** Bind the sliders (`#line-width`, `#line-opacity` and their outputs) to the overlay. */
export function bindDisplay(overlay) {
  const values = load();
  const controls = [
    ["lineWidth", document.getElementById("line-width"), document.getElementById("line-width-out"), (v) => `${v.toFixed(1)} px`],
    ["opacity", document.getElementById("line-opacity"), document.getElementById("line-opacity-out"), (v) => `${Math.round(v * 100)}%`],
  ];
  for (const [name, input, output, format] of controls) {
    if (!input) continue;
    const apply = (v) => {
      const lo = Number(input.min), hi = Number(input.max);
      values[name] = Math.min(hi, Math.max(lo, v));
      overlay[name] = values[name];
      if (output) output.textContent = format(values[name]);
      overlay.schedule();
    };
    input.value = String(values[name]);
    apply(values[name]);
    input.addEventListener("input", () => { apply(Number(input.value)); save(values); });
  }
}
