// The cells of a slide in memory, a spatial grid to find those in view, and the canvas overlay
// that draws them (one canvas, never one DOM node per cell). How each class is drawn: styles.js.

import { BIN_PX, BOX_MIN_PX, DensityGrid, drawDensity, drawScaleBar, overlayMode } from "./density.js";
import { dedupeBoxes } from "./overlap.js";
import { drawRuler } from "./ruler.js";
import { CLASS_STYLE, PLAIN, drawCorners, strokeCased } from "./styles.js";

// While the view moves, the overlay is drawn in full at most every `motionDrawMs` (100 ms) and
// every third frame; in between, the canvas drawn last follows the view (moved and scaled by a
// CSS transform, as map viewers do), which costs a software-rendered page far less than drawing
// thousands of squares every frame (benchmarks/overlay_fps.py: -14 % fps against no overlay
// before; -3 % with the 100 ms rule alone on a quiet machine, -10 % when frames were slower and
// it drew 70 % of them in full: hence the frames too).
const MOTION_FRAMES = 2; // frames that only follow the view between two full draws, at least


export class CellStore {
  constructor(config) {
    this.severity = config.severity;
    // decided by a person: shown whatever the confidence filter says ("predicted" is undecided)
    this.decided = new Set(config.review.decidedStatuses);
    this.width = config.slide.width;
    this.height = config.slide.height;
    this.cells = [];
    this.byId = new Map();
    this.bucket = 512;
    this.grid = new Map();
    this.cols = 1;
    this.classOn = Object.fromEntries(config.classes.map((c) => [c, true]));
    this.minConfidence = 0;
    this.showRejected = false;
    this.listeners = new Set();
    this.version = 0; // moves on every change of a cell or of the grid (the columns' cache)
    this._columns = null;
  }

  /** Rows of a partial layer (cells changed since some time): newer versions replace ours.
   * Returns the cells that changed. */
  merge(layer) {
    const f = Object.fromEntries(layer.fields.map((name, i) => [name, i]));
    const changed = [];
    for (const r of layer.rows) {
      const known = this.byId.get(r[f.id]);
      if (known && known.version >= r[f.version]) continue;
      const cell = this.upsert({
        id: r[f.id], x: r[f.x], y: r[f.y], width: r[f.width], height: r[f.height],
        current_class: r[f.current_class], predicted_class: r[f.predicted_class],
        review_status: r[f.review_status], version: r[f.version],
        probabilities: known ? known.probabilities : undefined,
      });
      cell.conf = r[f.confidence];
      this.version++;
      changed.push(cell);
    }
    return changed;
  }

  /** The whole layer: rows, or columns (`?layout=columns`, what the page loads). */
  load(layer) {
    if (layer.columns) {
      this.cells = cellsFromColumns(layer);
    } else {
      const f = Object.fromEntries(layer.fields.map((name, i) => [name, i]));
      this.cells = layer.rows.map((r) => newCell(
        r[f.id], r[f.x], r[f.y], r[f.width], r[f.height], r[f.current_class], r[f.predicted_class],
        r[f.review_status], r[f.confidence], r[f.version],
      ));
    }
    this.byId = new Map();
    for (const c of this.cells) this.byId.set(c.id, c);
    this._typical = undefined;
    // About 4 cells per bucket on average, within sensible bounds.
    const area = this.width * this.height;
    this.bucket = Math.max(256, Math.min(4096, Math.round(Math.sqrt((area * 4) / Math.max(1, this.cells.length)))));
    this.rebuild();
  }

  /** The grid is made again on its first use (the density map far out does without it, so the
   * first view of a large slide does not wait for it; the page makes it soon after: indexNow). */
  rebuild() {
    this.grid = null;
    this.cols = Math.ceil(this.width / this.bucket) + 1;
    this.version++;
    this.changed();
  }

  indexNow() {
    if (this.grid) return;
    this.grid = new Map();
    for (const cell of this.cells) this.index(cell);
  }

  keys(cell) {
    const b = this.bucket;
    const out = [];
    for (let by = Math.floor(cell.y / b); by <= Math.floor((cell.y + cell.h) / b); by++) {
      for (let bx = Math.floor(cell.x / b); bx <= Math.floor((cell.x + cell.w) / b); bx++) out.push(by * this.cols + bx);
    }
    return out;
  }

  index(cell) {
    this.version++;
    if (!this.grid) return; // (all are indexed when it is made)
    cell._keys = this.keys(cell);
    for (const k of cell._keys) {
      let list = this.grid.get(k);
      if (!list) { list = []; this.grid.set(k, list); }
      list.push(cell);
    }
  }

  unindex(cell) {
    this.version++;
    if (!this.grid) return;
    for (const k of cell._keys || []) {
      const list = this.grid.get(k);
      if (!list) continue;
      const i = list.indexOf(cell);
      if (i >= 0) list.splice(i, 1);
    }
  }

  /** Replace a cell's fields with the server's (or add it), keeping the grid right. */
  upsert(data) {
    const fields = {
      id: data.id, x: data.x, y: data.y, w: data.width, h: data.height, cls: data.current_class,
      pred: data.predicted_class, status: data.review_status, version: data.version,
    };
    let cell = this.byId.get(data.id);
    if (!cell) {
      const conf = data.review_status === "added" ? 1 : confidenceOf(data);
      cell = newCell(fields.id, fields.x, fields.y, fields.w, fields.h, fields.cls, fields.pred, fields.status, conf, fields.version);
      this.cells.push(cell);
      this.byId.set(cell.id, cell);
      this.index(cell);
    } else {
      this.unindex(cell);
      Object.assign(cell, fields);
      this.index(cell);
    }
    if (data.probabilities) cell.probabilities = data.probabilities;
    this.changed();
    return cell;
  }

  /** Apply the short answer of a bulk action ({id, version, current_class, review_status}). */
  applyChange(row) {
    const cell = this.byId.get(row.id);
    if (!cell || cell.version >= row.version) return null;
    Object.assign(cell, { version: row.version, cls: row.current_class, status: row.review_status });
    this.changed();
    return cell;
  }

  moveLocal(cell, box) {
    this.unindex(cell);
    Object.assign(cell, box);
    this.index(cell);
  }

  visible(cell) {
    if (cell.status === "rejected") return this.showRejected;
    if (!this.classOn[cell.cls]) return false;
    if (this.decided.has(cell.status)) return true;
    return cell.conf >= this.minConfidence;
  }

  /** Cells intersecting the level-0 rectangle, passing the display filters. */
  query(x0, y0, x1, y1, cb) {
    this.indexNow();
    const b = this.bucket;
    const bx0 = Math.max(0, Math.floor(x0 / b)), by0 = Math.max(0, Math.floor(y0 / b));
    const bx1 = Math.min(this.cols - 1, Math.floor(x1 / b)), by1 = Math.floor(Math.min(y1, this.height) / b);
    const stamp = (this._stamp = (this._stamp || 0) + 1);
    for (let by = by0; by <= by1; by++) {
      for (let bx = bx0; bx <= bx1; bx++) {
        const list = this.grid.get(by * this.cols + bx);
        if (!list) continue;
        for (const cell of list) {
          if (cell._seen === stamp) continue;
          cell._seen = stamp;
          if (cell.x > x1 || cell.y > y1 || cell.x + cell.w < x0 || cell.y + cell.h < y0) continue;
          if (this.visible(cell)) cb(cell);
        }
      }
    }
  }

  /** The median short side of the cells' boxes (level-0 px): how large a cell is drawn. */
  typicalSide() {
    if (this._typical === undefined) {
      const sides = new Float64Array(this.cells.length);
      for (let i = 0; i < sides.length; i++) sides[i] = Math.min(this.cells[i].w, this.cells[i].h);
      sides.sort(); // numeric, in place
      this._typical = sides.length ? sides[sides.length >> 1] : 40;
    }
    return this._typical;
  }

  /** The cells as columns for scanning them all at once (the density map far out): box edges,
   * centre, and per cell the index of its class in `classes` (classes.length for another class)
   * or -1 when the display filters hide it. Made again only after a change of the cells or of
   * the filters. */
  columns(classes) {
    const filters = `${this.minConfidence}|${this.showRejected}|${Object.values(this.classOn).join()}`;
    let cols = this._columns;
    if (cols && cols.version === this.version && cols.filters === filters && cols.classes === classes) return cols;
    const n = this.cells.length;
    if (!cols || cols.x0.length < n) {
      const size = Math.max(n, 1024);
      cols = {
        x0: new Float64Array(size), y0: new Float64Array(size), x1: new Float64Array(size), y1: new Float64Array(size),
        cx: new Float64Array(size), cy: new Float64Array(size), k: new Int32Array(size),
      };
    }
    const index = new Map(classes.map((c, i) => [c, i]));
    let side = 0;
    for (let i = 0; i < n; i++) {
      const c = this.cells[i];
      cols.x0[i] = c.x; cols.y0[i] = c.y; cols.x1[i] = c.x + c.w; cols.y1[i] = c.y + c.h;
      cols.cx[i] = c.x + c.w / 2; cols.cy[i] = c.y + c.h / 2;
      const k = index.get(c.cls);
      cols.k[i] = this.visible(c) ? (k === undefined ? classes.length : k) : -1;
      if (c.w > side) side = c.w;
      if (c.h > side) side = c.h;
    }
    Object.assign(cols, { n, side, version: this.version, filters, classes });
    this._columns = cols;
    return cols;
  }

  suspicion(cell) {
    return (this.severity[cell.cls] || 0) * cell.conf;
  }

  /** Cells ranked by suspicion (severity x confidence), then confidence. */
  ranked(filter = (c) => this.visible(c)) {
    return this.cells.filter(filter).sort((a, b) => this.suspicion(b) - this.suspicion(a) || b.conf - a.conf || a.id - b.id);
  }

  counts() {
    const out = {};
    for (const c of this.cells) if (c.status !== "rejected") out[c.cls] = (out[c.cls] || 0) + 1;
    return out;
  }

  onChange(fn) { this.listeners.add(fn); }
  changed() { for (const fn of this.listeners) fn(); }
}

/** A cell in memory (every cell the same shape, set at once: fast to make and to read). */
function newCell(id, x, y, w, h, cls, pred, status, conf, version) {
  return { id, x, y, w, h, cls, pred, status, conf, version, _keys: null, _seen: 0 };
}

/** The cells of a columnar layer: classes and statuses decoded, the confidence scaled back. */
function cellsFromColumns(layer) {
  const col = layer.columns, codes = layer.codes, scale = layer.confidence_scale;
  const { id, x, y, width, height, confidence, version } = col;
  const cc = col.current_class, pc = col.predicted_class, rs = col.review_status;
  const classes = codes.current_class, preds = codes.predicted_class, statuses = codes.review_status;
  const cells = new Array(id.length);
  for (let i = 0; i < id.length; i++) {
    cells[i] = newCell(
      id[i], x[i], y[i], width[i], height[i], classes[cc[i]], preds[pc[i]], statuses[rs[i]],
      confidence[i] / scale, version[i],
    );
  }
  return cells;
}

export function confidenceOf(data) {
  const p = data.probabilities || {};
  if (data.predicted_class && p[data.predicted_class] !== undefined) return Number(p[data.predicted_class]);
  return data.detection_score ?? 0;
}

export class Overlay {
  constructor(viewer, canvas, store, colours) {
    this.viewer = viewer;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.store = store;
    this.colours = colours;
    this.selected = null;
    this.editable = false;
    this.draft = null; // a box being drawn or dragged: {x, y, w, h, cls}
    this.lineWidth = 1.6; // of a predicted cell's box, CSS pixels (reviewed ones are drawn thicker)
    this.opacity = 1;
    this.pending = false;
    this.stale = false; // something other than the view changed: draw in full next frame
    this.drawnAt = null; // the transform and time of the last full draw
    this.restTimer = 0;
    this.motionDrawMs = 100;
    this.followed = 0; // frames that followed the view since the last full draw
    this.drawnCount = 0;
    this.onDrawn = null;
    this.mpp = null; // micrometres per level-0 pixel, when the slide says: the scale bar
    this.mode = "boxes"; // or "density" when boxes would not be legible (density.js)
    this.scaleBar = null;
    this.hidden = new Set(); // duplicates of a box drawn (overlap.js): neither drawn nor clickable
    this.setAside = null; // boxes [x, y, w, h] the model set aside as not cells, when shown (S)
    this.setAsideDrawn = 0;
    this.ruler = false; // the nuclear-size ruler (M), at `pointer` (screen px) or the centre
    this.rulerDrawn = null;
    this.pointer = null;
    this.grid = new DensityGrid();
    this.classes = Object.keys(colours); // the density map's class order
    viewer.element.addEventListener("mousemove", (e) => {
      const r = this.canvas.getBoundingClientRect();
      this.pointer = { x: e.clientX - r.left, y: e.clientY - r.top };
      if (this.ruler) this.schedule();
    });
    viewer.addHandler("update-viewport", () => this.requestFrame());
    const schedule = () => this.schedule();
    viewer.addHandler("resize", schedule);
    window.addEventListener("resize", schedule);
  }

  /** Draw in full on the next frame (cells, filters, selection or size changed). */
  schedule() {
    this.stale = true;
    this.requestFrame();
  }

  /** The view moved: follow it on the next frame, drawing in full only when due. */
  requestFrame() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.frame(); });
  }

  frame() {
    if (!this.stale && this.follow()) return;
    this.stale = false;
    this.draw();
  }

  /** Move and scale the canvas drawn last with the view, unless a full draw is due (the last
   * one `motionDrawMs` ago and MOTION_FRAMES frames followed since, or a zoom too far from its
   * own); a full draw follows once the view rests. False when a full draw is due now. */
  follow() {
    const drawn = this.drawnAt;
    if (!drawn) return false;
    if (this.followed >= MOTION_FRAMES && performance.now() - drawn.time >= this.motionDrawMs) return false;
    const t = this.transform();
    const r = t.s / drawn.s;
    if (!(r > 0.5 && r < 2)) return false;
    this.canvas.style.transform = `translate(${t.ox - drawn.ox * r}px, ${t.oy - drawn.oy * r}px) scale(${r})`;
    this.followed++;
    clearTimeout(this.restTimer);
    this.restTimer = setTimeout(() => this.schedule(), this.motionDrawMs);
    return true;
  }

  /** Level-0 to screen: screen = origin + image * scale (no rotation). */
  transform() {
    const OSD = window.OpenSeadragon;
    const vp = this.viewer.viewport;
    const a = vp.imageToViewerElementCoordinates(new OSD.Point(0, 0));
    const b = vp.imageToViewerElementCoordinates(new OSD.Point(this.store.width, this.store.height));
    return { ox: a.x, oy: a.y, s: (b.x - a.x) / this.store.width };
  }

  toImage(point) {
    const t = this.transform();
    return { x: (point.x - t.ox) / t.s, y: (point.y - t.oy) / t.s };
  }

  toScreenBox(c) {
    const t = this.transform();
    return { x: t.ox + c.x * t.s, y: t.oy + c.y * t.s, w: c.w * t.s, h: c.h * t.s };
  }

  draw() {
    const dpr = window.devicePixelRatio || 1;
    const cw = this.canvas.clientWidth, ch = this.canvas.clientHeight;
    if (this.canvas.width !== Math.round(cw * dpr) || this.canvas.height !== Math.round(ch * dpr)) {
      this.canvas.width = Math.round(cw * dpr);
      this.canvas.height = Math.round(ch * dpr);
    }
    const ctx = this.ctx;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cw, ch);
    this.canvas.style.transform = "";
    this.drawnAt = null;
    this.followed = 0;
    if (!this.viewer.world.getItemCount()) return;
    const t = this.transform();
    this.drawnAt = { ...t, time: performance.now() };
    const x0 = -t.ox / t.s, y0 = -t.oy / t.s;
    const x1 = (cw - t.ox) / t.s, y1 = (ch - t.oy) / t.s;
    let n = -1, inView = null;
    if (this.store.typicalSide() * t.s < BOX_MIN_PX) n = this.densityFar(t, x0, y0, x1, y1, cw, ch);
    if (n < 0) {
      inView = [];
      this.store.query(x0, y0, x1, y1, (c) => inView.push(c));
      n = inView.length;
    }
    this.mode = overlayMode(this.store.typicalSide(), t.s, n);
    if (this.mode === "density") {
      if (inView) this.densityBins = drawDensity(ctx, inView, t, this.colours, this.store.severity, this.grid);
      if (this.hidden.size) this.hidden = new Set();
    } else {
      const { kept, hidden } = dedupeBoxes(inView, (c) => this.priority(c));
      this.hidden = hidden;
      this.drawBoxes(kept, t);
    }
    this.setAsideDrawn = this.setAside && this.mode === "boxes" ? this.drawSetAside(t, x0, y0, x1, y1) : 0;
    this.drawSelection(t);
    this.scaleBar = this.mpp ? drawScaleBar(ctx, this.mpp, t.s, cw, ch) : null;
    const at = this.pointer || { x: cw / 2, y: ch / 2 };
    this.rulerDrawn = this.ruler && this.mpp ? drawRuler(ctx, this.mpp, t.s, at.x, at.y) : null;
    this.drawnCount = n;
    if (this.onDrawn) this.onDrawn(n, t.s, this.mode);
  }

  /** Far out (cells a few pixels wide: the density map whatever their number), the cells in view
   * are counted per square straight from the store's columns, no list of them made; the same
   * cells and squares as the grid's query and drawDensity. Returns how many are in view, or -1
   * (nothing drawn) when one falls outside the squares expected. */
  densityFar(t, x0, y0, x1, y1, cw, ch) {
    const cols = this.store.columns(this.classes);
    const margin = Math.ceil((cols.side * t.s) / 2 / BIN_PX) + 1; // centres off screen, boxes in view
    const grid = this.grid;
    grid.reset(-margin, -margin, Math.ceil(cw / BIN_PX) + 2 * margin + 1, Math.ceil(ch / BIN_PX) + 2 * margin + 1, this.classes.length);
    const { x0: ax0, y0: ay0, x1: ax1, y1: ay1, cx, cy, k } = cols;
    const ox = t.ox, oy = t.oy, s = t.s;
    let n = 0;
    for (let i = 0; i < cols.n; i++) {
      if (k[i] < 0 || ax0[i] > x1 || ay0[i] > y1 || ax1[i] < x0 || ay1[i] < y0) continue;
      if (!grid.add(ox + cx[i] * s, oy + cy[i] * s, k[i])) return -1;
      n++;
    }
    this.densityBins = grid.draw(this.ctx, this.classes, this.colours, this.store.severity);
    return n;
  }

  /** Which of two overlapping boxes is drawn: a person's decision, then the more suspicious. */
  priority(c) {
    return (this.store.decided.has(c.status) ? 1000 : 0) + this.store.suspicion(c);
  }

  /** Each cell's box once, grouped by class and style, each group stroked as one path. */
  drawBoxes(inView, t) {
    const ctx = this.ctx;
    // Groups by class and style (0 predicted, 1 reviewed, 2 rejected), in the order first met.
    const byClass = new Map(); // class -> its three groups
    const groups = [];
    for (const c of inView) {
      const style = c.status === "rejected" ? 2 : (c.status === "predicted" ? 0 : 1);
      let three = byClass.get(c.cls);
      if (!three) { three = [null, null, null]; byClass.set(c.cls, three); }
      let g = three[style];
      if (!g) { g = three[style] = { cls: c.cls, style, cells: [] }; groups.push(g); }
      g.cells.push(c);
    }
    const thin = t.s < 0.05;
    ctx.globalAlpha = this.opacity;
    ctx.lineJoin = "miter";
    for (const { cls, style, cells } of groups) {
      const rejected = style === 2;
      const st = rejected ? PLAIN : (CLASS_STYLE[cls] || PLAIN);
      const colour = rejected ? "rgba(120,120,120,.9)" : this.colours[cls];
      const lw = thin ? Math.min(1, this.lineWidth) : (style === 1 ? this.lineWidth * 1.8 : this.lineWidth);
      const boxes = (inset) => {
        ctx.beginPath();
        for (const c of cells) {
          const w = Math.max(3, c.w * t.s), h = Math.max(3, c.h * t.s);
          if (inset && (w < 4 * inset || h < 4 * inset)) continue;
          ctx.rect(t.ox + c.x * t.s + inset, t.oy + c.y * t.s + inset, w - 2 * inset, h - 2 * inset);
        }
      };
      boxes(0);
      ctx.setLineDash(rejected ? [2, 4] : st.dash.map((d) => d * Math.sqrt(Math.max(1, lw / 1.6)))); // longer dashes for thicker lines, not in proportion
      strokeCased(ctx, colour, lw, !thin && !rejected);
      if (thin || rejected) continue;
      ctx.setLineDash([]);
      if (st.double) { // SCC: an inner line as well
        boxes(lw + 2.5);
        ctx.lineWidth = Math.max(1, lw * 0.75);
        ctx.stroke();
      }
      if (st.corners) drawCorners(ctx, cells, t, lw, colour);
    }
    ctx.globalAlpha = 1;
    ctx.setLineDash([]);
  }

  /** The boxes set aside as not cells that are in view: grey, dotted, thin (nothing to act
   * on, only to look at). Returns how many. */
  drawSetAside(t, x0, y0, x1, y1) {
    const ctx = this.ctx;
    let n = 0;
    ctx.beginPath();
    for (const [x, y, w, h] of this.setAside) {
      if (x > x1 || y > y1 || x + w < x0 || y + h < y0) continue;
      ctx.rect(t.ox + x * t.s, t.oy + y * t.s, Math.max(3, w * t.s), Math.max(3, h * t.s));
      n++;
    }
    ctx.setLineDash([2, 3]);
    ctx.lineWidth = 1.2;
    ctx.strokeStyle = "rgba(255,255,255,.8)";
    ctx.stroke();
    ctx.lineDashOffset = 2.5;
    ctx.strokeStyle = "rgba(60,60,60,.9)";
    ctx.stroke();
    ctx.lineDashOffset = 0;
    ctx.setLineDash([]);
    return n;
  }

  drawSelection(t) {
    const ctx = this.ctx;
    const sel = this.draft || (this.selected && this.store.byId.get(this.selected));
    if (sel) {
      const b = { x: t.ox + sel.x * t.s, y: t.oy + sel.y * t.s, w: Math.max(4, sel.w * t.s), h: Math.max(4, sel.h * t.s) };
      ctx.lineWidth = 5;
      ctx.strokeStyle = "rgba(255,255,255,.95)";
      ctx.strokeRect(b.x - 3, b.y - 3, b.w + 6, b.h + 6);
      ctx.lineWidth = 2.5;
      ctx.strokeStyle = this.colours[sel.cls] || "#1f5fbf";
      ctx.strokeRect(b.x - 3, b.y - 3, b.w + 6, b.h + 6);
      if (this.editable && !this.draft && b.w > 14 && b.h > 14) { // handles: move or resize
        ctx.fillStyle = "#fff";
        ctx.strokeStyle = "#1b2230";
        ctx.lineWidth = 1;
        for (const [hx, hy] of [[b.x, b.y], [b.x + b.w, b.y], [b.x, b.y + b.h], [b.x + b.w, b.y + b.h]]) {
          ctx.fillRect(hx - 5, hy - 5, 10, 10);
          ctx.strokeRect(hx - 5, hy - 5, 10, 10);
        }
      }
    }
  }

  /** The smallest visible cell under a screen point (a few pixels of tolerance). */
  hit(point) {
    const t = this.transform();
    const p = { x: (point.x - t.ox) / t.s, y: (point.y - t.oy) / t.s };
    const tol = 4 / t.s;
    let best = null;
    this.store.query(p.x - tol, p.y - tol, p.x + tol, p.y + tol, (c) => {
      if (this.hidden.has(c.id)) return;
      if (!best || c.w * c.h < best.w * best.h) best = c;
    });
    return best;
  }

  /** What a press on the selected box grabs: a corner (resize) or the body (move). */
  grab(point) {
    const cell = this.selected && this.store.byId.get(this.selected);
    if (!cell) return null;
    const b = this.toScreenBox(cell);
    const corners = { nw: [b.x, b.y], ne: [b.x + b.w, b.y], sw: [b.x, b.y + b.h], se: [b.x + b.w, b.y + b.h] };
    for (const [name, [hx, hy]] of Object.entries(corners)) {
      if (Math.abs(point.x - hx) <= 9 && Math.abs(point.y - hy) <= 9) return { cell, mode: name };
    }
    if (point.x >= b.x - 3 && point.x <= b.x + b.w + 3 && point.y >= b.y - 3 && point.y <= b.y + b.h + 3) return { cell, mode: "move" };
    return null;
  }
}
