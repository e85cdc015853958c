// A ruler for nuclear size (issue 15, item 5), toggled with M when the slide says its microns per
// pixel: at the pointer (the view's centre until the pointer moves over it), a 20 µm rule with a
// tick every micrometre, and two circles to hold against a nucleus: a normal intermediate
// squamous nucleus (about 35 µm², 6.7 µm across) and three times its area (11.6 µm), the
// enlargement that separates LSIL from ASC-US in the Bethesda System.

export const RULE_UM = 20;
export const NUCLEUS_UM2 = 35;
export const REFERENCE = [
  { label: "35 µm² (intermediate nucleus)", area: NUCLEUS_UM2 },
  { label: "3× (105 µm²)", area: 3 * NUCLEUS_UM2 },
];

export function diameterUm(area) {
  return 2 * Math.sqrt(area / Math.PI);
}

/** Draw the ruler centred at screen point (cx, cy); `mpp` µm per level-0 px, `scale` screen px
 * per level-0 px. Returns what was drawn (px per µm, rule length and circle diameters in px). */
export function drawRuler(ctx, mpp, scale, cx, cy) {
  const pxPerUm = scale / mpp;
  const rule = RULE_UM * pxPerUm;
  const circles = REFERENCE.map((r) => ({ ...r, um: diameterUm(r.area), px: diameterUm(r.area) * pxPerUm }));
  ctx.save();
  ctx.lineCap = "butt";
  const x0 = cx - rule / 2, y = cy + circles[1].px / 2 + 14;
  for (const [colour, width] of [["rgba(255,255,255,.9)", 4], ["#111", 1.5]]) {
    ctx.strokeStyle = colour;
    ctx.lineWidth = width;
    ctx.beginPath();
    for (const c of circles) { ctx.moveTo(cx + c.px / 2, cy); ctx.arc(cx, cy, c.px / 2, 0, 2 * Math.PI); }
    ctx.moveTo(x0, y); ctx.lineTo(x0 + rule, y);
    for (let um = 0; um <= RULE_UM; um++) {
      const tick = um % 5 === 0 ? 7 : 3.5;
      if (pxPerUm < 3 && um % 5) continue; // a tick per µm only where they stay apart
      ctx.moveTo(x0 + um * pxPerUm, y - tick); ctx.lineTo(x0 + um * pxPerUm, y + tick);
    }
    ctx.stroke();
  }
  ctx.font = "600 11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.lineWidth = 3;
  ctx.strokeStyle = "rgba(255,255,255,.9)";
  ctx.fillStyle = "#111";
  const labels = [[`${RULE_UM} µm`, x0, y + 9], ...circles.map((c, i) => [`⌀ ${c.um.toFixed(1)} µm: ${c.label}`, cx + circles[1].px / 2 + 8, cy - 14 + i * 14])];
  for (const [text, x, ty] of labels) { ctx.strokeText(text, x, ty); ctx.fillText(text, x, ty); }
  ctx.restore();
  return { pxPerUm, rulePx: rule, circles: circles.map((c) => ({ um: c.um, px: c.px })) };
}
