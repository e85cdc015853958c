// Overlapping boxes of one cell are drawn once (issue 15, item 5). The detector can report one
// cell twice (overlapping tiles, two nuclei of one cell): of the boxes in view that overlap by
// at least DUPLICATE_IOU, only the first in priority is drawn (and clickable): a person's
// decision before a prediction, then the more suspicious, then the more confident. Rejected
// boxes are drawn apart (dashed grey, only when asked for) and never hide a live one.

export const DUPLICATE_IOU = 0.5;

export function iou(a, b) {
  const ix = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const iy = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  if (ix <= 0 || iy <= 0) return 0;
  const inter = ix * iy;
  return inter / (a.w * a.h + b.w * b.h - inter);
}

/** The cells to draw: `cells` without the boxes that duplicate a cell drawn before them.
 * `priority(c)` orders them (higher first). Returns {kept, hidden} (hidden: a Set of ids). */
export function dedupeBoxes(cells, priority) {
  const key = (x, y) => (y + 2) * 4194304 + x + 2; // a number per square, not a string
  const unsorted = cells.filter((c) => c.status !== "rejected");
  const rejected = cells.filter((c) => c.status === "rejected");
  const pr = new Float64Array(unsorted.length); // each cell's priority once, not per comparison
  for (let i = 0; i < pr.length; i++) pr[i] = priority(unsorted[i]);
  const order = Array.from(pr, (_, i) => i).sort((i, j) => pr[j] - pr[i]
    || unsorted[j].conf - unsorted[i].conf || unsorted[i].id - unsorted[j].id);
  const live = order.map((i) => unsorted[i]);
  let side = 0;
  for (const c of live) side = Math.max(side, c.w, c.h);
  const bucket = Math.max(1, side);
  const grid = new Map();
  const kept = [];
  const hidden = new Set();
  for (const c of live) {
    const bx = Math.floor(c.x / bucket), by = Math.floor(c.y / bucket);
    let dup = false;
    for (let y = by - 1; y <= by + 1 && !dup; y++) {
      for (let x = bx - 1; x <= bx + 1 && !dup; x++) {
        const list = grid.get(key(x, y));
        if (!list) continue;
        for (const k of list) {
          if (iou(c, k) >= DUPLICATE_IOU) { dup = true; break; }
        }
      }
    }
    if (dup) { hidden.add(c.id); continue; }
    kept.push(c);
    const list = grid.get(key(bx, by));
    if (list) list.push(c); else grid.set(key(bx, by), [c]);
  }
  return { kept: kept.concat(rejected), hidden };
}
