// Upload page: pick or create a patient, drop many files, each sent in chunks with a progress bar.
// A dropped connection is resumed from the offset the server holds (HEAD /api/uploads/{id}/);
// the upload's id is kept in localStorage, so dropping the same file after a reload resumes it.
import { api, ApiError, csrfToken, el, toast } from "./api.js";

const page = document.getElementById("upload-page");
const chunkSize = () => Number(page?.dataset.chunkSize) || 8 * 1024 * 1024;
const PARALLEL = 2;
const RETRIES = 8;
const patientSelect = document.getElementById("patient");
const list = document.getElementById("file-list");
const dropzone = document.getElementById("dropzone");
const input = document.getElementById("file-input");
const queue = [];
let running = 0;

const STATUS_LABELS = {
  uploaded: "Uploaded, waiting for analysis", queued: "Queued for analysis", analysing: "Analysing",
  analysed: "Analysed", in_review: "In review", signed_out: "Signed out", failed: "Analysis failed",
};

function resumeKey(patient, file) {
  return `papreview-upload:${patient}:${file.name}:${file.size}:${file.lastModified}`;
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(0)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

class FileUpload {
  constructor(file, patient) {
    this.file = file;
    this.patient = patient;
    this.bar = el("span", { style: "width:0%" });
    this.progress = el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0", "aria-label": `Upload of ${file.name}` }, this.bar);
    this.pct = el("span", { class: "pct small muted", text: "waiting" });
    this.msg = el("div", { class: "msg muted", text: formatBytes(file.size) });
    this.cancelButton = el("button", { class: "secondary small", type: "button", text: "Cancel", onclick: () => this.cancel() });
    this.item = el("li", { class: "file-item", "data-file": file.name },
      el("span", { class: "name", title: file.name, text: file.name }),
      el("div", { class: "queue-progress" }, this.progress, this.pct),
      this.cancelButton,
      this.msg);
    list.prepend(this.item);
    this.cancelled = false;
  }

  setProgress(done) {
    const pct = this.file.size ? Math.floor((100 * done) / this.file.size) : 100;
    this.bar.style.width = `${pct}%`;
    this.progress.setAttribute("aria-valuenow", String(pct));
    this.pct.textContent = `${pct}%`;
  }

  fail(message) {
    this.item.classList.add("failed");
    this.item.dataset.state = "failed";
    this.progress.classList.add("failed");
    this.pct.textContent = "refused";
    this.msg.className = "msg error-text";
    this.msg.setAttribute("role", "alert");
    this.msg.textContent = message;
    this.cancelButton.remove();
  }

  async cancel() {
    this.cancelled = true;
    if (this.upload) {
      try { await api(`/api/uploads/${this.upload.id}/`, { method: "DELETE" }); } catch (err) { /* gone */ }
      localStorage.removeItem(resumeKey(this.patient, this.file));
    }
    this.item.remove();
  }

  async start() {
    this.item.dataset.state = "uploading";
    const key = resumeKey(this.patient, this.file);
    const saved = localStorage.getItem(key);
    if (saved) {
      try {
        this.upload = await api(`/api/uploads/${saved}/`);
        if (this.upload.status !== "receiving") this.upload = null;
      } catch (err) { this.upload = null; }
    }
    if (!this.upload) {
      this.upload = await api("/api/uploads/", {
        method: "POST", body: { patient: Number(this.patient), filename: this.file.name, size: this.file.size },
      });
      localStorage.setItem(key, this.upload.id);
    } else {
      this.msg.textContent = `Resuming at ${formatBytes(this.upload.offset)}`;
    }
    let offset = this.upload.offset;
    this.setProgress(offset);
    let failures = 0;
    while (!this.cancelled) {
      const end = Math.min(offset + chunkSize(), this.file.size);
      try {
        const result = await this.sendChunk(offset, end);
        failures = 0;
        offset = result.offset;
        this.setProgress(offset);
        if (result.status === "complete") {
          localStorage.removeItem(key);
          return this.done(result);
        }
      } catch (err) {
        if (err instanceof ApiError && err.code === "upload_offset_mismatch") {
          offset = err.body.offset;  // the server has more (or less) than we thought: go on from there
          continue;
        }
        if (err instanceof ApiError && err.status && err.status !== 502 && err.status !== 503) {
          localStorage.removeItem(key);
          throw err;
        }
        failures += 1;
        if (failures > RETRIES) throw new ApiError(0, { detail: "The connection keeps dropping. Drop the file again later to resume." });
        this.msg.textContent = `Connection lost; resuming (try ${failures} of ${RETRIES})…`;
        await sleep(Math.min(500 * 2 ** failures, 8000));
        const head = await fetch(`/api/uploads/${this.upload.id}/`, { method: "HEAD", credentials: "same-origin" }).catch(() => null);
        if (head && head.ok) offset = Number(head.headers.get("Upload-Offset"));
      }
    }
    return null;
  }

  sendChunk(offset, end) {
    // XMLHttpRequest (not fetch) for upload progress events within a chunk.
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PATCH", `/api/uploads/${this.upload.id}/`);
      xhr.setRequestHeader("Upload-Offset", String(offset));
      xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (e) => this.setProgress(offset + e.loaded);
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(new ApiError(xhr.status, body));
      };
      xhr.onerror = () => reject(new ApiError(0, { detail: "Connection lost." }));
      xhr.send(this.file.slice(offset, end));
    });
  }

  done(upload) {
    this.item.classList.add("done");
    this.item.dataset.state = "done";
    this.progress.classList.add("done");
    this.pct.textContent = "100%";
    this.cancelButton.remove();
    this.msg.className = "msg";
    this.status = el("span", { class: "badge status-uploaded", text: STATUS_LABELS.uploaded });
    this.msg.replaceChildren(
      el("a", { href: upload.slide_url, text: `Open slide ${upload.slide}` }), " · ", this.status,
    );
    this.slideId = upload.slide;
    this.watch();
    return upload;
  }

  async watch() {
    // Show the analysis as it runs, until it ends.
    for (;;) {
      try {
        const slide = await api(`/api/slides/${this.slideId}/`);
        this.status.className = `badge status-${slide.status}`;
        let text = STATUS_LABELS[slide.status] || slide.status;
        if (slide.status === "analysing" && slide.progress !== null) text += ` ${slide.progress}%`;
        if (slide.status === "failed" && slide.failure_reason) text += `: ${slide.failure_reason}`;
        this.status.textContent = text;
        this.item.dataset.slideStatus = slide.status;
        if (!["uploaded", "queued", "analysing"].includes(slide.status)) return;
      } catch (err) { /* try again */ }
      await sleep(1500);
    }
  }
}

async function pump() {
  while (running < PARALLEL && queue.length) {
    const job = queue.shift();
    running += 1;
    job.start()
      .catch((err) => job.fail(err.message || String(err)))
      .finally(() => { running -= 1; pump(); });
  }
}

function addFiles(files) {
  const errorBox = document.getElementById("drop-error");
  errorBox.textContent = "";
  if (!patientSelect.value) {
    errorBox.textContent = "Choose or create the patient first.";
    patientSelect.focus();
    return;
  }
  for (const file of files) queue.push(new FileUpload(file, patientSelect.value));
  pump();
}

if (page) {
  dropzone.addEventListener("click", () => input.click());
  dropzone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { addFiles(Array.from(input.files)); input.value = ""; });
  ["dragenter", "dragover"].forEach((t) => dropzone.addEventListener(t, (e) => { e.preventDefault(); dropzone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => dropzone.addEventListener(t, (e) => { e.preventDefault(); dropzone.classList.remove("over"); }));
  dropzone.addEventListener("drop", (e) => addFiles(Array.from(e.dataTransfer.files)));
  window.addEventListener("beforeunload", (e) => { if (running) { e.preventDefault(); e.returnValue = ""; } });

  // Search all patients (the list starts with the 200 most recent).
  let searchTimer = null;
  document.getElementById("patient-search").addEventListener("input", (e) => {
    clearTimeout(searchTimer);
    const q = e.target.value.trim();
    searchTimer = setTimeout(async () => {
      try {
        const data = await api(`/api/patients/?search=${encodeURIComponent(q)}&page_size=100`);
        const keep = patientSelect.value;
        patientSelect.replaceChildren(el("option", { value: "", text: data.count ? `${data.count} patient${data.count === 1 ? "" : "s"} found…` : "No patient found" }),
          ...data.results.map((p) => el("option", { value: String(p.id), text: `${p.identifier}${p.birth_year ? ` · ${p.birth_year}` : ""} (${p.slide_count} slide${p.slide_count === 1 ? "" : "s"})` })));
        if (data.results.length === 1) patientSelect.value = String(data.results[0].id);
        else if (data.results.some((p) => String(p.id) === keep)) patientSelect.value = keep;
      } catch (err) {
        toast(err.message, "error");
      }
    }, 250);
  });

  document.getElementById("patient-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const err = document.getElementById("patient-error");
    err.textContent = "";
    const identifier = document.getElementById("new-identifier").value.trim();
    const year = document.getElementById("new-birth-year").value;
    try {
      const patient = await api("/api/patients/", {
        method: "POST", body: { identifier, birth_year: year ? Number(year) : null },
      });
      const option = el("option", { value: String(patient.id), text: `${patient.identifier} (new)` });
      patientSelect.append(option);
      patientSelect.value = String(patient.id);
      document.getElementById("new-patient").open = false;
      toast(`Patient ${patient.identifier} created.`, "ok", 2500);
      dropzone.focus();
    } catch (error) {
      err.textContent = error.message;
    }
  });
}
