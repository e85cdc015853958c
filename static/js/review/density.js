// What the overlay draws when boxes would not be legible (issue 15, item 5): below a zoom where a
// typical cell is a few screen pixels, or with too many cells in view, the cells become a density
// map of counts per screen square, coloured by the most severe class in it; and the scale bar in
// micrometres when the slide says its microns per pixel.

// Boxes are drawn only when a typical cell is at least this many screen pixels on its short side
// and at most this many cells are in view; otherwise the density map.
export const BOX_MIN_PX = 8;
export const BOX_MAX_COUNT = 4000;
// Side of a density square, CSS pixels.
export const BIN_PX = 40;

/** Which view the cells get: "boxes" or "density". */
export function overlayMode(typicalSide, scale, inView) {
  return typicalSide * scale < BOX_MIN_PX || inView > BOX_MAX_COUNT ? "density" : "boxes";
}

// A heat ramp (ColorBrewer YlOrRd) for the number of cells in a square, on a log scale.
const HEAT = [[255, 237, 160], [254, 178, 76], [240, 59, 32], [160, 0, 38]];

export function heatColour(f) {
  const x = Math.min(1, Math.max(0, f)) * (HEAT.length - 1);
  const i = Math.min(HEAT.length - 2, Math.floor(x));
  const a = HEAT[i], b = HEAT[i + 1], u = x - i;
  return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * u)).join(",")})`;
}

/** Draw the density map: each square filled by how many cells it holds (heat, log scale) with its
 * count, and along its foot a bar of its classes in proportion, most severe first. Returns how
 * many squares it drew. */
export function drawDensity(ctx, cells, t, colours, severity, grid = new DensityGrid()) {
  const classes = Object.keys(colours);
  const index = new Map(classes.map((c, i) => [c, i]));
  let bx0 = Infinity, by0 = Infinity, bx1 = -Infinity, by1 = -Infinity;
  for (const c of cells) {
    const bx = Math.floor((t.ox + (c.x + c.w / 2) * t.s) / BIN_PX), by = Math.floor((t.oy + (c.y + c.h / 2) * t.s) / BIN_PX);
    bx0 = Math.min(bx0, bx); by0 = Math.min(by0, by); bx1 = Math.max(bx1, bx); by1 = Math.max(by1, by);
  }
  if (!cells.length) return 0;
  grid.reset(bx0, by0, bx1 - bx0 + 1, by1 - by0 + 1, classes.length);
  for (const c of cells) {
    const k = index.get(c.cls);
    grid.add(t.ox + (c.x + c.w / 2) * t.s, t.oy + (c.y + c.h / 2) * t.s, k === undefined ? classes.length : k);
  }
  return grid.draw(ctx, classes, colours, severity);
}

const FONT = "600 12px system-ui, sans-serif";

/** Counts per screen square and class in reused typed arrays (no object per cell or square, so
 * that 100,000 cells are counted in about a millisecond), and the density map drawn from them:
 * squares from (`bx0`, `by0`), `nx` by `ny` of them. Each count's label is drawn once into a
 * small image and copied from there (on whole device pixels: the same pixels as drawing the
 * text each time, at a fraction of the cost). */
export class DensityGrid {
  constructor() {
    this.counts = new Int32Array(0);
    this.heat = new Map(); // total -> fill, for one `most`
    this.heatMost = -1;
    this.labels = new Map(); // label text -> its image, for one device pixel ratio
    this.labelsDpr = 0;
    this.order = null; // class indices, most severe first, for one colours/severity
    this.orderOf = null;
  }

  /** Start counting a view's squares; `classes` classes (a class index >= classes: total only). */
  reset(bx0, by0, nx, ny, classes) {
    this.bx0 = bx0; this.by0 = by0; this.nx = nx; this.ny = ny;
    this.stride = classes + 1;
    this.k = classes;
    const size = nx * ny * this.stride;
    if (this.counts.length < size) this.counts = new Int32Array(size);
    else this.counts.fill(0, 0, size);
  }

  /** Count a cell centred at screen point (sx, sy) of class index k; false outside the squares. */
  add(sx, sy, k) {
    const ix = Math.floor(sx / BIN_PX) - this.bx0, iy = Math.floor(sy / BIN_PX) - this.by0;
    if (ix < 0 || iy < 0 || ix >= this.nx || iy >= this.ny) return false;
    const o = (iy * this.nx + ix) * this.stride;
    this.counts[o]++;
    if (k < this.k) this.counts[o + 1 + k]++;
    return true;
  }

  heatOf(total, most) {
    if (most !== this.heatMost) { this.heat.clear(); this.heatMost = most; }
    let fill = this.heat.get(total);
    if (fill === undefined) {
      fill = heatColour(Math.log1p(total) / Math.log1p(most));
      this.heat.set(total, fill);
    }
    return fill;
  }

  /** A label's image, made now unless this frame has made enough of them (then null: the first
   * frame of a large slide is not held up making hundreds; the next frames make the rest). */
  label(ctx, text, dpr) {
    if (dpr !== this.labelsDpr || this.labels.size > 4096) { this.labels.clear(); this.labelsDpr = dpr; }
    let img = this.labels.get(text);
    if (!img) {
      if (this.newLabels-- <= 0) return null;
      const w = 2 * Math.ceil(ctx.measureText(text).width / 2 + 4), h = 24;
      const canvas = document.createElement("canvas");
      canvas.width = w * dpr;
      canvas.height = h * dpr;
      const g = canvas.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      drawLabel(g, text, w / 2, h / 2);
      img = { canvas, w, h };
      this.labels.set(text, img);
    }
    return img;
  }

  /** Draw the squares counted; returns how many. `classes` as counted (their index). */
  draw(ctx, classes, colours, severity) {
    if (this.orderOf !== colours) {
      this.order = classes.map((c, i) => i).sort((a, b) => (severity[classes[b]] || 0) - (severity[classes[a]] || 0));
      this.orderOf = colours;
    }
    const { counts, stride, nx, ny } = this;
    const n = nx * ny;
    let most = 1, bins = 0;
    for (let i = 0; i < n; i++) {
      const total = counts[i * stride];
      if (total) { bins++; if (total > most) most = total; }
    }
    // Whole device pixels (labels copied as images) unless the ratio is fractional.
    const dpr = ctx.getTransform().a;
    const images = Number.isInteger(dpr);
    ctx.save();
    ctx.font = FONT;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    this.newLabels = 48;
    for (let i = 0; i < n; i++) {
      const o = i * stride, total = counts[o];
      if (!total) continue;
      const x = ((i % nx) + this.bx0) * BIN_PX, y = (Math.floor(i / nx) + this.by0) * BIN_PX;
      ctx.globalAlpha = 0.6;
      ctx.fillStyle = this.heatOf(total, most);
      ctx.fillRect(x + 1, y + 1, BIN_PX - 2, BIN_PX - 2);
      ctx.globalAlpha = 1;
      let bx = x + 1;
      for (const k of this.order) {
        const count = counts[o + 1 + k];
        if (!count) continue;
        const w = ((BIN_PX - 2) * count) / total;
        ctx.fillStyle = colours[classes[k]];
        ctx.fillRect(bx, y + BIN_PX - 6, w, 5);
        bx += w;
      }
      const text = total >= 1000 ? `${(total / 1000).toFixed(1)}k` : String(total);
      const img = images && this.label(ctx, text, dpr);
      if (img) {
        ctx.drawImage(img.canvas, x + BIN_PX / 2 - img.w / 2, y + BIN_PX / 2 - 3 - img.h / 2, img.w, img.h);
      } else {
        drawLabel(ctx, text, x + BIN_PX / 2, y + BIN_PX / 2 - 3);
      }
    }
    ctx.restore();
    return bins;
  }
}

/** A square's count: white on a dark outline, centred on (x, y). */
function drawLabel(ctx, text, x, y) {
  ctx.font = FONT;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.lineWidth = 3;
  ctx.strokeStyle = "rgba(0,0,0,.7)";
  ctx.strokeText(text, x, y);
  ctx.fillStyle = "#fff";
  ctx.fillText(text, x, y);
}

/** The scale bar's length: a round number of micrometres (1, 2 or 5 x 10^k) about `target` screen
 * pixels long. `mpp` is micrometres per level-0 pixel, `scale` screen pixels per level-0 pixel. */
export function scaleBarLength(mpp, scale, target = 120) {
  const umPerPx = mpp / scale;
  const raw = umPerPx * target;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const um = [5, 2, 1].map((m) => m * pow).find((v) => v <= raw) || pow;
  return { um, px: um / umPerPx };
}

export function formatMicrons(um) {
  if (um >= 1000) return `${um / 1000} mm`;
  return `${um >= 1 ? um : um.toPrecision(1)} µm`;
}

/** Draw the scale bar at the bottom right (the counts are at the bottom left); returns
 * {um, px, label}. */
export function drawScaleBar(ctx, mpp, scale, width, height) {
  const bar = scaleBarLength(mpp, scale);
  const label = formatMicrons(bar.um);
  ctx.save();
  ctx.font = "600 12px system-ui, sans-serif";
  const w = Math.max(bar.px, ctx.measureText(label).width) + 16;
  const x = width - w - 6, y = height - 14;
  ctx.fillStyle = "rgba(255,255,255,.85)";
  ctx.fillRect(x - 8, y - 24, w, 32);
  ctx.fillStyle = "#111";
  ctx.fillRect(x, y, bar.px, 4);
  ctx.fillRect(x, y - 5, 2, 9);
  ctx.fillRect(x + bar.px - 2, y - 5, 2, 9);
  ctx.textBaseline = "bottom";
  ctx.fillText(label, x, y - 6);
  ctx.restore();
  return { ...bar, label };
}
