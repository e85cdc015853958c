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

/** Counts per screen square and class for the cells in view. */
export function densityBins(cells, t, severity) {
  const bins = new Map();
  for (const c of cells) {
    const bx = Math.floor((t.ox + (c.x + c.w / 2) * t.s) / BIN_PX);
    const by = Math.floor((t.oy + (c.y + c.h / 2) * t.s) / BIN_PX);
    const key = (by + 4096) * 16384 + bx + 4096; // a number, not a string: 100,000 cells a frame
    let bin = bins.get(key);
    if (!bin) { bin = { bx, by, total: 0, byClass: {}, top: null }; bins.set(key, bin); }
    bin.total++;
    bin.byClass[c.cls] = (bin.byClass[c.cls] || 0) + 1;
    if (bin.top === null || (severity[c.cls] || 0) > (severity[bin.top] || 0)) bin.top = c.cls;
  }
  return [...bins.values()];
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
 * count, and along its foot a bar of its classes in proportion, most severe first. Returns the
 * squares drawn. */
export function drawDensity(ctx, cells, t, colours, severity) {
  const bins = densityBins(cells, t, severity);
  const most = bins.reduce((m, b) => Math.max(m, b.total), 1);
  const order = Object.keys(colours).sort((a, b) => (severity[b] || 0) - (severity[a] || 0));
  ctx.save();
  ctx.font = "600 12px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (const b of bins) {
    const x = b.bx * BIN_PX, y = b.by * BIN_PX;
    ctx.globalAlpha = 0.6;
    ctx.fillStyle = heatColour(Math.log1p(b.total) / Math.log1p(most));
    ctx.fillRect(x + 1, y + 1, BIN_PX - 2, BIN_PX - 2);
    ctx.globalAlpha = 1;
    let bx = x + 1;
    for (const cls of order) {
      const k = b.byClass[cls];
      if (!k) continue;
      const w = ((BIN_PX - 2) * k) / b.total;
      ctx.fillStyle = colours[cls];
      ctx.fillRect(bx, y + BIN_PX - 6, w, 5);
      bx += w;
    }
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(0,0,0,.7)";
    const label = b.total >= 1000 ? `${(b.total / 1000).toFixed(1)}k` : String(b.total);
    ctx.strokeText(label, x + BIN_PX / 2, y + BIN_PX / 2 - 3);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x + BIN_PX / 2, y + BIN_PX / 2 - 3);
  }
  ctx.restore();
  return bins;
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
