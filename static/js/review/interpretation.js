// The interpretation panel: suggestion from the most severe reviewed cell, the structured Bethesda
// report kept as a versioned draft (saved as it is edited; a save that crossed someone else's is
// refused and their draft shown), sign-out (the server decides who may sign out what), referral
// to a pathologist with a reason, and reopening with a reason.
import { api, el, toast } from "../api.js";

const $ = (id) => document.getElementById(id);
const EDITABLE = ["analysed", "in_review", "referred"];

// "14:02:11" today, the date too on another day.
function when(iso) {
  const d = new Date(iso);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

export class Interpretation {
  constructor(config, { onStatus }) {
    this.config = config;
    this.vocabulary = config.bethesda || { list_keys: [] };
    this.onStatus = onStatus;
    this.form = $("interp-form");
    this.timer = null;
    this.status = config.slide.status;
    this.version = 0; // the draft version last read; a save sends it
    this.saving = null; // the save in flight
    this.dirty = false; // edited since the save in flight started
    this.form.addEventListener("input", () => this.edited());
    this.form.addEventListener("change", () => this.edited());
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.signOut(); });
    $("bethesda").addEventListener("change", () => this.updateSignOutButton());
    $("adequacy").addEventListener("change", () => this.updateAdequacy());
    this.bindReferral();
  }

  // --- the form <-> the draft ------------------------------------------------------------------

  reportInputs() {
    return [...this.form.querySelectorAll("[data-report]")];
  }

  report() {
    const report = {};
    for (const key of this.vocabulary.list_keys) report[key] = [];
    for (const input of this.reportInputs()) {
      const key = input.dataset.report;
      if (input.type === "checkbox" && this.vocabulary.list_keys.includes(key)) {
        if (input.checked) report[key].push(input.value);
      } else if (input.type === "checkbox") {
        report[key] = input.checked;
      } else {
        report[key] = input.value;
      }
    }
    return report;
  }

  values() {
    return {
      bethesda_category: $("bethesda").value,
      specimen_adequacy: $("adequacy").value,
      specimen_type: $("specimen-type").value,
      comment: $("comment").value,
      report: this.report(),
    };
  }

  fill(source) {
    $("bethesda").value = source.bethesda_category || "";
    $("adequacy").value = source.specimen_adequacy || "satisfactory";
    $("specimen-type").value = source.specimen_type || "";
    $("comment").value = source.comment || "";
    const report = source.report || {};
    for (const input of this.reportInputs()) {
      const value = report[input.dataset.report];
      if (input.type === "checkbox" && this.vocabulary.list_keys.includes(input.dataset.report)) {
        input.checked = Array.isArray(value) && value.includes(input.value);
      } else if (input.type === "checkbox") {
        input.checked = Boolean(value);
      } else {
        input.value = value || "";
      }
    }
    this.updateAdequacy();
    this.updateGroups({ openFilled: true });
  }

  // The reason an unsatisfactory specimen is unsatisfactory only shows when it is.
  updateAdequacy() {
    const unsatisfactory = $("adequacy").value === "unsatisfactory";
    $("unsatisfactory-row").hidden = !unsatisfactory && !$("report-unsatisfactory_reason").value;
  }

  // Each group's summary says how much is set inside, so a closed group hides nothing.
  updateGroups({ openFilled = false } = {}) {
    for (const group of this.form.querySelectorAll("details.group")) {
      let n = 0;
      for (const input of group.querySelectorAll("[data-report]")) {
        if (input.type === "checkbox" ? input.checked : input.value.trim()) n += 1;
      }
      group.querySelector(".count").textContent = n ? `· ${n} set` : "";
      if (openFilled && n) group.open = true;
    }
  }

  async load() {
    try {
      this.render(await api(this.config.urls.interpretation));
    } catch (err) {
      toast(`The interpretation could not be loaded: ${err.message}`, "error");
    }
  }

  async refreshSuggestion() {
    clearTimeout(this.suggestTimer);
    this.suggestTimer = setTimeout(async () => {
      try {
        const data = await api(this.config.urls.interpretation);
        this.renderSuggestion(data.suggestion);
      } catch (err) { /* next change tries again */ }
    }, 400);
  }

  renderSuggestion(s) {
    const box = $("suggest");
    box.replaceChildren();
    if (!s.bethesda_category) {
      box.append(el("span", { class: "small muted", text: "No reviewed cells yet: accept, relabel or add cells to get a suggestion." }));
      this.suggested = "";
      return;
    }
    this.suggested = s.bethesda_category;
    const counts = Object.entries(s.reviewed_counts).map(([c, n]) => `${c} ${n}`).join(", ");
    box.append(
      el("span", {}, el("span", { class: "small muted", text: "Suggested " }),
        el("span", { class: "cls", "data-class": s.bethesda_category, text: s.bethesda_category }),
        el("div", { class: "source", text: `most severe reviewed cell (${counts})` })),
      el("button", { type: "button", class: "secondary small", id: "use-suggestion", text: "Use", disabled: this.readOnly(),
        onclick: () => { $("bethesda").value = this.suggested; this.edited(0); this.updateSignOutButton(); } }),
    );
  }

  readOnly() {
    return !this.config.user.canWrite || !EDITABLE.includes(this.status);
  }

  render(data) {
    this.status = data.status;
    this.onStatus(data.status);
    this.renderSuggestion(data.suggestion);
    this.version = data.draft ? data.draft.version : 0;
    const source = data.status === "signed_out" && data.interpretation ? data.interpretation : data.draft;
    if (source) this.fill(source);
    const readOnly = this.readOnly();
    for (const input of this.form.querySelectorAll("select, textarea, input, button")) input.disabled = readOnly;
    this.renderDraftState(data.status === "signed_out" ? null : data.draft);
    this.renderReferral(data);
    this.renderSignedOut(data);
    this.renderHistory(data.events);
    this.updateSignOutButton();
    $("interp").dataset.loaded = "1"; // for the browser tests: the state has been shown
  }

  renderDraftState(draft) {
    const box = $("draft-state");
    if (!draft) { box.textContent = ""; return; }
    box.textContent = `Draft saved · by ${draft.updated_by || "someone"} at ${when(draft.updated_at)}`;
  }

  // --- referral --------------------------------------------------------------------------------

  latestReferral(events) {
    return (events || []).find((e) => e.kind === "referred"); // newest first
  }

  renderReferral(data) {
    const box = $("referral");
    const referral = this.latestReferral(data.events);
    box.replaceChildren();
    box.hidden = !(referral && data.status === "referred");
    if (!box.hidden) {
      box.append(
        el("strong", { text: "Referred to a pathologist" }),
        el("div", { class: "small", text: `by ${referral.by} on ${new Date(referral.at).toLocaleString()}` }),
        el("div", { class: "why", id: "referral-reason", text: referral.reason }),
      );
    }
    const user = this.config.user;
    $("refer-btn").hidden = !user.canRefer || user.isPathologist || !["analysed", "in_review"].includes(data.status);
    $("refer-btn").disabled = this.readOnly();
  }

  bindReferral() {
    const dialog = $("refer-dialog");
    if (!dialog) return;
    // The page's shortcuts (accept, reject, ...) must not act on the slide while typing here.
    dialog.addEventListener("keydown", (e) => e.stopPropagation());
    $("refer-btn").addEventListener("click", () => this.openReferral());
    $("refer-cancel").addEventListener("click", () => dialog.close());
    $("refer-form").addEventListener("submit", (e) => { e.preventDefault(); this.refer(); });
  }

  async openReferral() {
    $("refer-error").textContent = "";
    $("refer-dialog").showModal();
    $("refer-reason").focus();
    const select = $("refer-pathologist");
    if (select.options.length > 1) return;
    try {
      const people = await api(`${this.config.urls.reviewers}?role=pathologist`);
      for (const p of people) {
        const name = [p.first_name, p.last_name].filter(Boolean).join(" ");
        select.append(el("option", { value: String(p.id), text: name ? `${name} (${p.username})` : p.username }));
      }
    } catch (err) {
      $("refer-error").textContent = `The pathologists could not be listed (${err.message}); the slide can still go to any pathologist.`;
    }
  }

  async refer() {
    const reason = $("refer-reason").value.trim();
    if (!reason) {
      $("refer-error").textContent = "Say why the slide needs a pathologist.";
      $("refer-reason").focus();
      return;
    }
    const pathologist = $("refer-pathologist").value;
    $("refer-submit").disabled = true;
    try {
      if (this.timer || this.saving) await this.save();
      await api(this.config.urls.refer, { method: "POST", body: { reason, pathologist: pathologist ? Number(pathologist) : null } });
      $("refer-dialog").close();
      $("refer-reason").value = "";
      toast("Referred to a pathologist.", "ok", 4000);
      await this.load();
    } catch (err) {
      $("refer-error").textContent = err.message;
    } finally {
      $("refer-submit").disabled = false;
    }
  }

  // --- signed out, history ---------------------------------------------------------------------

  renderSignedOut(data) {
    const box = $("signed-out");
    box.replaceChildren();
    const signedOut = data.status === "signed_out" && data.interpretation;
    box.hidden = !signedOut;
    $("signout-btn").hidden = Boolean(signedOut);
    if (!signedOut) return;
    const i = data.interpretation;
    box.append(el("div", { class: "signed-banner", role: "status" },
      el("strong", { text: `Signed out as ${i.bethesda_category}` }),
      el("div", { class: "small", text: `by ${i.signed_out_by} on ${new Date(i.signed_out_at).toLocaleString()}. Read-only.` })));
    const nextSlide = document.getElementById("next-slide");
    if (nextSlide) {
      box.append(el("a", { class: "button small", href: nextSlide.href, style: "margin-top:.5rem", text: "Open the next slide (Shift+N)" }));
    }
    if (this.config.user.canReopen) {
      const reason = el("textarea", { id: "reopen-reason", rows: "2", placeholder: "Why is the slide reopened?", "aria-label": "Reason for reopening" });
      const button = el("button", { type: "button", class: "secondary small", id: "reopen-btn", text: "Reopen for review" });
      button.addEventListener("click", () => this.reopen(reason.value));
      box.append(el("div", { style: "margin-top:.6rem;display:flex;flex-direction:column;gap:.35rem" }, reason, button));
    } else {
      box.append(el("p", { class: "small muted", text: "A pathologist can reopen it." }));
    }
  }

  renderHistory(events) {
    const text = {
      reopened: (e) => `Reopened by ${e.by} on ${new Date(e.at).toLocaleString()}: “${e.reason}” (was ${e.before.bethesda_category || "–"})`,
      referred: (e) => `Referred by ${e.by} on ${new Date(e.at).toLocaleString()}: “${e.reason}”`,
    };
    $("history").replaceChildren(...(events || []).filter((e) => text[e.kind]).map((e) => el("li", { text: text[e.kind](e) })));
  }

  updateSignOutButton() {
    const button = $("signout-btn");
    const cat = $("bethesda").value;
    const allowed = this.config.user.signOutClasses;
    const error = $("signout-error");
    error.textContent = "";
    const referredAway = this.status === "referred" && !this.config.user.isPathologist;
    button.disabled = this.readOnly() || !cat || !allowed.includes(cat) || referredAway;
    button.textContent = cat ? `Sign out as ${cat}` : "Sign out";
    if (this.readOnly()) return;
    if (referredAway) {
      error.textContent = "Referred to a pathologist: a pathologist signs it out.";
    } else if (cat && !allowed.includes(cat)) {
      error.textContent = allowed.length ? `Your role may sign out only ${allowed.join(", ")}; ${cat} needs a pathologist.` : "Your role cannot sign out slides.";
    }
  }

  // --- saving ----------------------------------------------------------------------------------

  edited(delay = 600) {
    this.updateGroups();
    this.updateAdequacy();
    if (this.readOnly()) return;
    $("draft-state").textContent = "Unsaved changes…";
    if (this.saving) this.dirty = true;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.save().catch(() => {}), delay);
  }

  // One save at a time: each sends the version the previous one answered.
  async save() {
    clearTimeout(this.timer);
    this.timer = null;
    while (this.saving) await this.saving.catch(() => {});
    this.dirty = false;
    this.saving = this.put();
    try {
      return await this.saving;
    } finally {
      this.saving = null;
    }
  }

  async put() {
    try {
      const data = await api(this.config.urls.interpretation, { method: "PUT", body: { ...this.values(), version: this.version } });
      this.version = data.draft.version;
      $("draft-conflict").hidden = true;
      if (!this.dirty) this.renderDraftState(data.draft);
      this.renderSuggestion(data.suggestion);
      return data;
    } catch (err) {
      if (err.code === "stale_draft" && err.body.draft) {
        this.showConflict(err.body.draft);
      } else {
        $("draft-state").textContent = "";
        toast(`Draft not saved: ${err.message}`, "error", 8000);
      }
      throw err;
    }
  }

  // Someone saved the draft since we read it: theirs is kept and shown, ours is not saved.
  showConflict(draft) {
    clearTimeout(this.timer);
    this.timer = null;
    this.dirty = false;
    this.version = draft.version;
    this.fill(draft);
    this.renderDraftState(draft);
    this.updateSignOutButton();
    const box = $("draft-conflict");
    box.textContent = `${draft.updated_by || "Someone"} changed the draft at ${when(draft.updated_at)}: their version is shown; your edit was not saved.`;
    box.hidden = false;
  }

  async signOut() {
    const values = this.values();
    if (!values.bethesda_category) return;
    $("signout-btn").disabled = true;
    try {
      await this.save();
      await api(this.config.urls.signOut, { method: "POST", body: values });
      toast(`Signed out as ${values.bethesda_category}.`, "ok", 4000);
      $("draft-conflict").hidden = true;
      await this.load();
      $("interp").scrollIntoView({ block: "start" }); // the signed-out banner at the top
    } catch (err) {
      if (err.code !== "stale_draft") $("signout-error").textContent = err.message;
      if (err.code === "flagged_cells_undecided") {
        // The viewer may show them (main.js); the message says what to do either way.
        document.dispatchEvent(new CustomEvent("papreview:undecided-cells", { detail: err.body.undecided_cells || [] }));
      }
      $("signout-btn").disabled = false;
    }
  }

  async reopen(reason) {
    try {
      await api(this.config.urls.reopen, { method: "POST", body: { reason } });
      toast("Reopened for review.", "ok", 3000);
      await this.load();
    } catch (err) {
      toast(err.message, "error", 8000);
    }
  }
}
