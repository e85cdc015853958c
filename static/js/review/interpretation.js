// The interpretation panel: suggestion from the most severe reviewed cell, the draft (saved as it
// is edited), sign-out (the server decides who may sign out what), and reopening with a reason.
import { api, el, toast } from "../api.js";

const $ = (id) => document.getElementById(id);

export class Interpretation {
  constructor(config, { onStatus }) {
    this.config = config;
    this.onStatus = onStatus;
    this.form = $("interp-form");
    this.timer = null;
    this.status = config.slide.status;
    this.form.addEventListener("input", () => this.scheduleSave());
    this.form.addEventListener("change", () => this.scheduleSave());
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.signOut(); });
    $("bethesda").addEventListener("change", () => this.updateSignOutButton());
  }

  values() {
    return {
      bethesda_category: $("bethesda").value,
      specimen_adequacy: $("adequacy").value,
      comment: $("comment").value,
    };
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
        onclick: () => { $("bethesda").value = this.suggested; this.scheduleSave(0); this.updateSignOutButton(); } }),
    );
  }

  readOnly() {
    return !this.config.user.canWrite || this.status === "signed_out" || !["analysed", "in_review"].includes(this.status);
  }

  render(data) {
    this.status = data.status;
    this.onStatus(data.status);
    this.renderSuggestion(data.suggestion);
    const source = data.status === "signed_out" && data.interpretation ? data.interpretation : data.draft;
    if (source) {
      $("bethesda").value = source.bethesda_category || "";
      $("adequacy").value = source.specimen_adequacy;
      $("comment").value = source.comment;
    } else if (!$("bethesda").value && data.suggestion.bethesda_category) {
      $("bethesda").value = "";
    }
    const readOnly = this.readOnly();
    for (const input of this.form.querySelectorAll("select, textarea, button")) input.disabled = readOnly;
    $("draft-state").textContent = data.draft && data.status !== "signed_out" ? `Draft saved ${new Date(data.draft.updated_at).toLocaleString()}${data.draft.updated_by ? ` by ${data.draft.updated_by}` : ""}` : "";
    this.renderSignedOut(data);
    this.renderHistory(data.events);
    this.updateSignOutButton();
  }

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
    const list = $("history");
    list.replaceChildren(...events.filter((e) => e.kind === "reopened").map((e) =>
      el("li", { text: `Reopened by ${e.by} on ${new Date(e.at).toLocaleString()}: “${e.reason}” (was ${e.before.bethesda_category || "–"})` })));
  }

  updateSignOutButton() {
    const button = $("signout-btn");
    const cat = $("bethesda").value;
    const allowed = this.config.user.signOutClasses;
    const error = $("signout-error");
    error.textContent = "";
    button.disabled = this.readOnly() || !cat || !allowed.includes(cat);
    button.textContent = cat ? `Sign out as ${cat}` : "Sign out";
    if (cat && !this.readOnly() && !allowed.includes(cat)) {
      error.textContent = allowed.length ? `Your role may sign out only ${allowed.join(", ")}; ${cat} needs a pathologist.` : "Your role cannot sign out slides.";
    }
  }

  scheduleSave(delay = 600) {
    if (this.readOnly()) return;
    $("draft-state").textContent = "Unsaved changes…";
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.save(), delay);
  }

  async save() {
    clearTimeout(this.timer);
    this.timer = null;
    try {
      const data = await api(this.config.urls.interpretation, { method: "PUT", body: this.values() });
      $("draft-state").textContent = `Draft saved ${new Date(data.draft.updated_at).toLocaleTimeString()}`;
      this.renderSuggestion(data.suggestion);
      return data;
    } catch (err) {
      $("draft-state").textContent = "";
      toast(`Draft not saved: ${err.message}`, "error", 8000);
      throw err;
    }
  }

  async signOut() {
    const values = this.values();
    if (!values.bethesda_category) return;
    $("signout-btn").disabled = true;
    try {
      await this.save();
      await api(this.config.urls.signOut, { method: "POST", body: values });
      toast(`Signed out as ${values.bethesda_category}.`, "ok", 4000);
      await this.load();
    } catch (err) {
      $("signout-error").textContent = err.message;
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
