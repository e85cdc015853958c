// What the model set aside as not cells (leukocytes, debris): never cells, never counted, but a
// reviewer may want to see where they were. S (or the header's button) loads their boxes once
// and has the overlay draw them as grey dotted boxes; S again hides them.
import { api, toast } from "../api.js";

const $ = (id) => document.getElementById(id);

export async function toggleSetAside(page) {
  const overlay = page.overlay, button = $("set-aside-toggle");
  if (!overlay || !button) return;
  if (!page.setAsideBoxes) {
    if (page.setAsideLoading) return; // S pressed again while they load: one toggle, not two
    page.setAsideLoading = true;
    try {
      const found = await api(page.config.urls.setAside);
      page.setAsideBoxes = found.boxes;
      if (found.boxes.length < found.count) {
        toast(`Showing the first ${found.boxes.length.toLocaleString()} of ${found.count.toLocaleString()} objects set aside.`, "info", 6000);
      }
    } catch (err) {
      toast(`The objects set aside cannot be shown: ${err.message}`, "error", 8000);
      return;
    } finally {
      page.setAsideLoading = false;
    }
  }
  overlay.setAside = overlay.setAside ? null : page.setAsideBoxes;
  button.setAttribute("aria-pressed", String(Boolean(overlay.setAside)));
  overlay.schedule();
}

export function bindSetAside(page) {
  $("set-aside-toggle")?.addEventListener("click", (e) => { e.currentTarget.blur(); toggleSetAside(page); });
}
