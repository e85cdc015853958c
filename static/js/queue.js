// Review queue: live analysis progress (polls the API, no reload), assignment, keyboard moves.
import { api, toast } from "./api.js";

const table = document.getElementById("queue");
const rows = () => Array.from(table.querySelectorAll("tbody tr[data-slide]"));
const config = JSON.parse(document.getElementById("queue-config")?.textContent || "{}");
const STATUS_LABELS = config.slideStatusLabels || {}; // the server's words for a slide's status
const IN_PROGRESS = new Set(["uploaded", "queued", "analysing"]);

function renderRow(tr, slide) {
  tr.dataset.status = slide.status;
  const status = tr.querySelector(".status-cell");
  status.replaceChildren();
  const badge = document.createElement("span");
  badge.className = `badge status-${slide.status}`;
  badge.textContent = STATUS_LABELS[slide.status] || slide.status;
  status.append(badge);
  if (slide.failure_reason) {
    const reason = document.createElement("div");
    reason.className = "error-text small";
    reason.textContent = slide.failure_reason;
    status.append(reason);
  }
  const cell = tr.querySelector(".progress-cell");
  const pct = slide.progress ?? 0;
  const failed = slide.status === "failed";
  cell.innerHTML = "";
  if (slide.progress === null && !failed) {
    cell.innerHTML = `<span class="muted small">${IN_PROGRESS.has(slide.status) ? "waiting" : "–"}</span>`;
  } else {
    const wrap = document.createElement("div");
    wrap.className = "queue-progress";
    wrap.innerHTML = `<div class="progress${pct === 100 ? " done" : ""}${failed ? " failed" : ""}" role="progressbar" aria-label="Analysis progress" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${pct}"><span style="width:${pct}%"></span></div><span class="pct">${failed ? "failed" : pct + "%"}</span>`;
    cell.append(wrap);
  }
  if (slide.triage_score !== null && slide.triage_score !== undefined) {
    const triage = tr.querySelector(".triage-cell");
    triage.innerHTML = "";
    const span = document.createElement("span");
    span.className = "cls";
    span.dataset.class = slide.triage_class;
    span.textContent = Number(slide.triage_score).toFixed(2);
    triage.append(span);
    const suggest = tr.querySelector(".suggest-cell");
    if (suggest.querySelector(".muted") && slide.triage_class) {
      suggest.innerHTML = `<span class="cls" data-class="${slide.triage_class}">${slide.triage_class}</span> <span class="source">AI</span>`;
    }
  }
}

async function poll() {
  const pending = rows().filter((tr) => IN_PROGRESS.has(tr.dataset.status));
  await Promise.all(pending.map(async (tr) => {
    try {
      renderRow(tr, await api(`/api/slides/${tr.dataset.slide}/`, { poll: true }));
    } catch (err) {
      /* a transient error: try again on the next round */
    }
  }));
  if (rows().some((tr) => IN_PROGRESS.has(tr.dataset.status))) setTimeout(poll, 2000);
}
if (rows().some((tr) => IN_PROGRESS.has(tr.dataset.status))) setTimeout(poll, 1500);

table.addEventListener("change", async (event) => {
  const select = event.target.closest("select[data-assign]");
  if (!select) return;
  const reviewer = select.value ? Number(select.value) : null;
  select.disabled = true;
  try {
    await api(`/api/slides/${select.dataset.assign}/assign/`, { method: "POST", body: { reviewer } });
    toast(reviewer ? `Assigned to ${select.selectedOptions[0].textContent}.` : "Unassigned.", "ok", 2500);
  } catch (err) {
    toast(err.message, "error");
  } finally {
    select.disabled = false;
  }
});

// Keyboard: j/k (or arrows) move the focus row, Enter opens it, / searches.
let focused = -1;
function focusRow(i) {
  const list = rows();
  if (!list.length) return;
  focused = Math.max(0, Math.min(list.length - 1, i));
  list.forEach((tr, k) => tr.classList.toggle("focused", k === focused));
  list[focused].scrollIntoView({ block: "nearest" });
}
document.addEventListener("keydown", (event) => {
  const tag = (event.target.tagName || "").toLowerCase();
  if (["input", "select", "textarea"].includes(tag)) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.key === "j" || event.key === "ArrowDown") { focusRow(focused + 1); event.preventDefault(); }
  else if (event.key === "k" || event.key === "ArrowUp") { focusRow(focused - 1); event.preventDefault(); }
  else if (event.key === "Enter" && focused >= 0) { window.location = rows()[focused].dataset.url; }
  else if (event.key === "/") { document.getElementById("id_q").focus(); event.preventDefault(); }
});
