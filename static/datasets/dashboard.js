// Model dashboard charts: one horizontal stacked bar chart per model version, a bar per class
// split by what reviewers did with the model's cells. Plain SVG, no library.
const SVG = "http://www.w3.org/2000/svg";
const OUTCOME_COLOURS = {
  confirmed: "#1e7b34",
  relabelled: "#f0a202",
  cleared: "#8fc59b",
  rejected: "#b3261e",
  added: "#1f5fbf",
  undecided: "#d5d9e0",
};

function node(tag, attrs = {}, text = null) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== null) el.textContent = text;
  return el;
}

export function stackedBars(version, classes, outcomes, colours) {
  const rowH = 22;
  const left = 64;
  const right = 48;
  const width = 460;
  const top = 6;
  const height = top + classes.length * rowH + 22;
  const totals = classes.map((c) => outcomes.reduce((s, o) => s + version.classes[c][o], 0));
  const max = Math.max(1, ...totals);
  const scale = (width - left - right) / max;
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img",
    "aria-label": `Review outcomes of ${version.version} per class` });
  classes.forEach((cls, i) => {
    const y = top + i * rowH;
    svg.appendChild(node("rect", { x: 4, y: y + 5, width: 8, height: 8, fill: colours[cls] || "#999" }));
    svg.appendChild(node("text", { x: 16, y: y + 13 }, cls));
    let x = left;
    for (const o of outcomes) {
      const n = version.classes[cls][o];
      if (!n) continue;
      const w = n * scale;
      const rect = node("rect", { x, y: y + 2, width: Math.max(w, 1), height: rowH - 6,
        fill: OUTCOME_COLOURS[o] || "#777", "data-outcome": o, "data-class": cls });
      rect.appendChild(node("title", {}, `${cls}: ${n} ${o}`));
      svg.appendChild(rect);
      x += w;
    }
    svg.appendChild(node("text", { x: x + 4, y: y + 13 }, String(totals[i])));
  });
  svg.appendChild(node("line", { x1: left, y1: height - 18, x2: width - right, y2: height - 18,
    stroke: "#c5ccd6" }));
  svg.appendChild(node("text", { x: left, y: height - 4 }, "0"));
  svg.appendChild(node("text", { x: width - right - 20, y: height - 4 }, String(max)));
  return svg;
}

function rates(total) {
  // Rates over the cells a person decided; undecided ones are counted apart, never as kept.
  const decided = total.confirmed + total.relabelled + total.cleared + total.rejected;
  const pct = (n) => (decided ? `${Math.round((100 * n) / decided)}%` : "–");
  return `${decided} decided: ${pct(total.confirmed)} kept, ${pct(total.relabelled)} relabelled, ` +
    `${pct(total.cleared)} cleared as not abnormal, ${pct(total.rejected)} rejected; ` +
    `${total.added} added (misses); ${total.undecided} undecided (not counted)`;
}

function render() {
  const data = JSON.parse(document.getElementById("dashboard-data").textContent);
  const colours = JSON.parse(document.getElementById("class-colours").textContent);
  const legend = document.getElementById("outcome-legend");
  for (const o of data.outcomes) {
    const span = document.createElement("span");
    span.style.setProperty("--swatch", OUTCOME_COLOURS[o]);
    span.textContent = o;
    legend.appendChild(span);
  }
  for (const stage of ["detector", "classifier"]) {
    const box = document.getElementById(`charts-${stage}`);
    if (!data[stage].length) {
      box.innerHTML = `<p class="muted">No ${stage} version has reviewed cells yet.</p>`;
      continue;
    }
    for (const version of data[stage]) {
      const card = document.createElement("div");
      card.className = "chart";
      card.dataset.version = version.version;
      const h = document.createElement("h3");
      h.textContent = `${stage} ${version.version}`;
      const p = document.createElement("p");
      p.className = "muted small";
      p.textContent = rates(version.total);
      card.append(h, p, stackedBars(version, data.classes, data.outcomes, colours));
      box.appendChild(card);
    }
  }
}

render();
