// Export list: poll the exports still being built and show their progress; reload when one
// finishes so its download link and figures appear.
import { api } from "../js/api.js";

const rows = () => [...document.querySelectorAll("#exports tr[data-export]")].filter(
  (tr) => tr.dataset.status === "pending" || tr.dataset.status === "running",
);

async function poll() {
  const active = rows();
  if (!active.length) return;
  let finished = false;
  for (const tr of active) {
    try {
      const data = await api(`/api/exports/${tr.dataset.export}/`);
      const bar = tr.querySelector(".progress > span");
      const pct = tr.querySelector(".pct");
      if (bar) bar.style.width = `${data.progress}%`;
      if (pct) pct.textContent = `${data.progress}%`;
      const slides = tr.querySelector(".slides");
      if (slides) slides.textContent = `${data.slides_done}/${data.slide_count}`;
      if (data.status === "ready" || data.status === "failed") finished = true;
      tr.dataset.status = data.status;
    } catch (err) {
      // a transient error: try again on the next tick
    }
  }
  if (finished) window.location.reload();
  else setTimeout(poll, 2000);
}

setTimeout(poll, 1500);
