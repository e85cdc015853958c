// Flagged cells (what the model thinks abnormal with enough confidence: each must be decided by a
// person before a less severe sign-out) and sightings (which cells this reviewer has seen, told to
// the server, which is what "reviewed, none abnormal" may vouch for).
import { api } from "../api.js";

export class Flags {
  constructor(store, threshold = 0.5) {
    this.store = store;
    this.threshold = threshold;
  }

  /** Predicted by the model (not drawn), abnormal, confident enough. Stays flagged once decided. */
  isFlagged(cell) {
    return Boolean(cell.pred) && cell.pred !== "NILM" && cell.status !== "added" && cell.conf >= this.threshold;
  }

  isDecided(cell) {
    return cell.status !== "predicted";
  }

  isUndecided(cell) {
    return this.isFlagged(cell) && !this.isDecided(cell);
  }

  counts() {
    let flagged = 0, reviewed = 0;
    for (const c of this.store.cells) {
      if (!this.isFlagged(c)) continue;
      flagged++;
      if (this.isDecided(c)) reviewed++;
    }
    return { flagged, reviewed };
  }

  /** Undecided flagged cells, most suspicious first (the store's ranking). */
  undecided() {
    return this.store.ranked((c) => this.isUndecided(c));
  }

  /** The next undecided flagged cell after `currentId` in that order (wrapping), else the first. */
  next(currentId) {
    const list = this.undecided();
    if (!list.length) return null;
    const i = list.findIndex((c) => c.id === currentId);
    return list[(i + 1) % list.length];
  }
}

const GALLERY_DEBOUNCE_MS = 1000;
const RETRY_MS = 5000;

/** Sightings go to the server in the background, batched; a failed batch is kept and sent again
 * later. Nothing waits for them except the "reviewed, none abnormal" action (flush()). */
export class Sightings {
  constructor(url) {
    this.url = url; // absent until the server offers it: then nothing is sent
    this.pending = { selected: new Set(), gallery: new Set() };
    this.sent = { selected: new Set(), gallery: new Set() };
    this.timer = null;
    this.sending = null;
  }

  /** Seen by this reviewer on this page (recorded or about to be). */
  seen(id) {
    return this.sent.selected.has(id) || this.sent.gallery.has(id)
      || this.pending.selected.has(id) || this.pending.gallery.has(id);
  }

  record(ids, via) {
    if (!this.url) return;
    let added = false;
    for (const id of ids) {
      if (this.sent[via].has(id) || this.pending[via].has(id)) continue;
      this.pending[via].add(id);
      added = true;
    }
    if (!added) return;
    // A selection is one deliberate look: send it now; gallery crops come in bursts as it scrolls.
    this.schedule(via === "selected" ? 0 : GALLERY_DEBOUNCE_MS);
    this.onChange?.();
  }

  /** The server did not count these as seen (409 not_seen): look for them again. */
  forget(ids) {
    for (const id of ids) for (const via of ["selected", "gallery"]) this.sent[via].delete(id);
    this.onChange?.();
  }

  schedule(ms) {
    if (this.timer !== null && ms >= GALLERY_DEBOUNCE_MS) return; // one already due
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { this.timer = null; this.flush().catch(() => {}); }, ms);
  }

  /** Send what is pending; resolves when the server has it (rejects when it could not). */
  async flush() {
    while (this.sending) await this.sending.catch(() => {}); // one batch at a time
    const batches = Object.entries(this.pending).filter(([, ids]) => ids.size);
    if (!batches.length) return;
    this.sending = (async () => {
      let failed = null;
      for (const [via, ids] of batches) {
        const cells = [...ids];
        try {
          await api(this.url, { method: "POST", body: { cells, via } });
          for (const id of cells) { ids.delete(id); this.sent[via].add(id); }
        } catch (err) {
          failed = err;
          // Refused for good (not allowed, unknown cells): sending it again would not help.
          if (err.status >= 400 && err.status < 500 && err.status !== 429) for (const id of cells) ids.delete(id);
        }
      }
      if (failed) {
        if (Object.values(this.pending).some((ids) => ids.size)) this.schedule(RETRY_MS);
        throw failed;
      }
    })();
    try { await this.sending; } finally { this.sending = null; }
  }
}
