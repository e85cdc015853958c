// Keeping the page current: loading the cells, other reviewers' changes, the slide's status and
// analysis progress, and queueing the analysis again.
import { api, toast } from "../api.js";

const $ = (id) => document.getElementById(id);
export const IN_PROGRESS = new Set(["uploaded", "queued", "analysing"]);

/** `page` gives the config, state, store and the overlay, gallery, interpretation, setStatus,
 * renderCell and renderCounts. */
export function createSync(page) {
  const { config, state, store } = page;
  // Other reviewers' changes: every few seconds, the cells changed since the last look (with a
  // few seconds of overlap, so a change committed late is not missed; versions decide).
  const watchMs = (config.testHooks && window.__reviewWatchMs) || 10_000; // (tests make it shorter)

  async function loadCells() {
    const t0 = performance.now();
    // The whole layer as columns (preloaded by the page's head: the same URL).
    const layer = await api(config.urls.cellColumns);
    performance.mark("cells-fetched");
    state.layerAsOf = layer.as_of;
    store.load(layer); // (the counts follow the store's change)
    performance.mark("cells-indexed");
    state.cellsLoaded = true;
    state.cellsLoadMs = performance.now() - t0;
    page.overlay.schedule();
    // The gallery's crops wait until the cells are drawn, so they do not compete with the tiles.
    // So does the cells' grid (what finds the boxes in view closer in).
    requestAnimationFrame(() => setTimeout(() => { store.indexNow(); page.gallery.renderNow(); }, 150));
  }

  async function watchOthers() {
    try {
      if (state.cellsLoaded && !state.inFlight && !state.drag && document.visibilityState === "visible") {
        const since = new Date(new Date(state.layerAsOf).getTime() - 5000).toISOString();
        const layer = await api(`${config.urls.cellLayer}?since=${encodeURIComponent(since)}`, { poll: true });
        state.layerAsOf = layer.as_of;
        if (!state.inFlight) {
          const changed = store.merge(layer);
          if (changed.length) {
            toast(`${changed.length} cell${changed.length === 1 ? " was" : "s were"} changed by another reviewer; the view shows the change.`, "info", 5000);
            page.overlay.schedule();
            page.gallery.render();
            if (changed.some((c) => c.id === state.selected)) page.renderCell();
            page.interpretation?.refreshSuggestion();
          }
        }
      }
    } catch (err) { /* try again on the next round */ }
    setTimeout(watchOthers, watchMs);
  }

  async function refreshSlide() {
    try {
      const slide = await api(config.urls.slide, { poll: true });
      const progress = $("analysis-progress");
      const running = IN_PROGRESS.has(slide.status);
      progress.hidden = !running;
      if (running) {
        const pct = slide.progress ?? 0;
        progress.querySelector("span").style.width = `${pct}%`;
        progress.querySelector("[role=progressbar]").setAttribute("aria-valuenow", String(pct));
        progress.querySelector(".pct").textContent = `${pct}%`;
      }
      const was = state.status;
      page.setStatus(slide.status);
      if (IN_PROGRESS.has(was) && !running) {
        await loadCells();
        page.interpretation?.load();
      }
      if (running) setTimeout(refreshSlide, 2000);
      if (slide.status === "failed" && slide.failure_reason) $("hud").textContent = `Analysis failed: ${slide.failure_reason}`;
    } catch (err) {
      setTimeout(refreshSlide, 4000);
    }
  }

  async function reanalyse() {
    const button = $("reanalyse-btn");
    button.disabled = true;
    try {
      await api(config.urls.analyze, { method: "POST", body: {} });
      toast("Analysis queued again. Reviewed cells are kept; the rest are replaced when it ends.", "ok", 5000);
      page.setStatus("queued");
      $("analysis-progress").hidden = false;
      setTimeout(refreshSlide, 1000);
    } catch (err) {
      toast(err.message, "error", 8000);
    } finally {
      button.disabled = false;
    }
  }

  /** Load the cells, then look for others' changes (and follow a running analysis). */
  function start() {
    loadCells().catch((err) => toast(`Cells could not be loaded: ${err.message}`, "error", 10000));
    page.interpretation.load();
    if (IN_PROGRESS.has(state.status)) setTimeout(refreshSlide, 1500);
    setTimeout(watchOthers, watchMs);
  }

  return { refreshSlide, reanalyse, start };
}
