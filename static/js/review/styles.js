// How each Bethesda class is drawn on the overlay and in the legend: line style and a casing
// under the class colour (the colours themselves come from the page config, defined once in
// Python: inference.types.CLASS_COLOURS).

// How each class is drawn besides its colour, so that colour is never the only cue (colour-vision
// deficiencies, stain under the line): the atypical classes (ASC-*) dashed, the definite ones
// solid; high-grade classes get corner brackets, SCC a second, inner line.
export const CLASS_STYLE = {
  NILM: { dash: [], corners: false, double: false },
  "ASC-US": { dash: [6, 4], corners: false, double: false },
  LSIL: { dash: [], corners: false, double: false },
  "ASC-H": { dash: [6, 4], corners: true, double: false },
  HSIL: { dash: [], corners: true, double: false },
  SCC: { dash: [], corners: true, double: true },
};
export const PLAIN = { dash: [], corners: false, double: false };

/** A contrasting casing under a class colour: dark under light colours, white under dark ones, so
 * a line shows on pale background and on dark nuclei alike. */
export function casingOf(hex) {
  let casing = CASINGS.get(hex);
  if (casing === undefined) {
    casing = casingFor(hex);
    CASINGS.set(hex, casing);
  }
  return casing;
}

const CASINGS = new Map();

function casingFor(hex) {
  const v = parseInt(String(hex).slice(1), 16);
  const lin = (c) => { c /= 255; return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const lum = 0.2126 * lin((v >> 16) & 255) + 0.7152 * lin((v >> 8) & 255) + 0.0722 * lin(v & 255);
  return lum > 0.3 ? "rgba(20,20,20,.7)" : "rgba(255,255,255,.85)";
}

/** A small SVG of how a class is drawn (for the legend): colour, casing, dashes, corners. */
export function swatchSvg(cls, colour) {
  const st = CLASS_STYLE[cls] || PLAIN;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 22 16");
  svg.setAttribute("width", "22");
  svg.setAttribute("height", "16");
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("sw-svg");
  const add = (tag, attrs) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    svg.append(node);
  };
  const box = { x: 4, y: 3.5, width: 14, height: 9, fill: "none" };
  const dash = st.dash.length ? "3 2" : "none";
  add("rect", { ...box, stroke: casingOf(colour), "stroke-width": 3.5, "stroke-dasharray": dash });
  add("rect", { ...box, stroke: colour, "stroke-width": 1.8, "stroke-dasharray": dash });
  if (st.double) add("rect", { x: 6.5, y: 6, width: 9, height: 4, fill: "none", stroke: colour, "stroke-width": 1 });
  if (st.corners) {
    add("path", { d: "M1 4V1H4M18 1H21V4M21 12V15H18M4 15H1V12", fill: "none", stroke: colour, "stroke-width": 1.5 });
  }
  return svg;
}

/** Stroke the current path in a class colour: over its casing, one pixel wider on each side,
 * unless `cased` is false (thin or rejected lines). */
export function strokeCased(ctx, colour, lw, cased = true) {
  if (cased) {
    ctx.strokeStyle = casingOf(colour);
    ctx.lineWidth = lw + 2;
    ctx.stroke();
  }
  ctx.strokeStyle = colour;
  ctx.lineWidth = lw;
  ctx.stroke();
}

/** Corner brackets just outside each box (high-grade classes), cased like the lines. */
export function drawCorners(ctx, cells, t, lw, colour) {
  const gap = lw + 2;
  ctx.beginPath();
  for (const c of cells) {
    const w = c.w * t.s, h = c.h * t.s;
    if (w < 10 || h < 10) continue; // too small to carry a mark: the colour has to do
    const arm = Math.min(12, Math.max(5, Math.min(w, h) / 3));
    const x0 = t.ox + c.x * t.s - gap, y0 = t.oy + c.y * t.s - gap;
    const x1 = x0 + w + 2 * gap, y1 = y0 + h + 2 * gap;
    ctx.moveTo(x0, y0 + arm); ctx.lineTo(x0, y0); ctx.lineTo(x0 + arm, y0);
    ctx.moveTo(x1 - arm, y0); ctx.lineTo(x1, y0); ctx.lineTo(x1, y0 + arm);
    ctx.moveTo(x1, y1 - arm); ctx.lineTo(x1, y1); ctx.lineTo(x1 - arm, y1);
    ctx.moveTo(x0 + arm, y1); ctx.lineTo(x0, y1); ctx.lineTo(x0, y1 - arm);
  }
  strokeCased(ctx, colour, lw);
}
