// Shared pieces for models: links, sizes, status badges, download progress, and the model
// actions (download now, remove) with the API's answer shown where the person is looking.

import { ApiError, del, post } from "./api.js";
import { asking, dropModel, loadModels, model, putModel, refreshReadOnly } from "./model.js";
import { confirmDialog, errorText, h, markWritable, notify } from "./ui.js";

// Model ids hold a slash (org/name) or are absolute paths: one percent-encoded segment.
export function modelPath(id) {
  return `/models/${encodeURIComponent(id)}`;
}

export function modelHref(id) {
  return `#/models/${encodeURIComponent(id)}`;
}

export function modelLink(id, text = id) {
  return h("a", { href: modelHref(id), class: "model-link", title: id }, text);
}

// 1536 -> "1.5 KiB", as the reconciler's own messages write sizes.
export function bytes(count) {
  if (count === null || count === undefined) return "–";
  let value = count;
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (value < 1024 || unit === "GiB") return unit === "B" ? `${value} B` : `${value.toFixed(1)} ${unit}`;
    value /= 1024;
  }
  return `${value.toFixed(1)} TiB`;
}

export function parameters(meta) {
  if (!meta?.parameters) return null;
  const n = meta.parameters;
  const text = n >= 1e9 ? `${(n / 1e9).toFixed(1)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : `${(n / 1e3).toFixed(1)}k`;
  return `${meta.parameters_estimated ? "≈" : ""}${text} parameters`;
}

const STATUS_TEXT = { available: "available", downloading: "downloading", downloaded: "downloaded", failed: "failed" };

export function modelBadge(item) {
  const title = [item.reason, item.message].filter(Boolean).join(": ");
  return h("span", { class: `mstatus mstatus-${item.status}`, title: title || null }, STATUS_TEXT[item.status] || item.status);
}

// A running download: a bar, then "12.0 MiB of 90.9 MiB (13%) · 2 of 7 files".
export function progressView(item, { compact = false } = {}) {
  const p = item.progress;
  if (item.status !== "downloading") return null;
  if (!p) return h("span", { class: "progress-text muted" }, item.message || "waiting for a download slot");
  const percent = Math.max(0, Math.min(100, p.percent));
  const text = `${bytes(p.done_bytes)} of ${bytes(p.total_bytes)} (${Math.floor(percent)}%)`;
  return h(
    "span",
    { class: `download${compact ? " compact" : ""}` },
    h("progress", { max: "100", value: percent.toFixed(1), "aria-label": `Download of ${item.model_id}`, "aria-valuetext": text }),
    h("span", { class: "progress-text" }, text, compact ? "" : ` · ${p.files_done} of ${p.files_total} files`),
  );
}

// Refused or warned by the check before start, in a few words (the whole text on hover).
export function checkBadges(item) {
  const checks = item.checks || [];
  const refused = checks.filter((c) => c.verdict === "refused");
  const warned = checks.filter((c) => c.verdict === "warning");
  const badge = (list, kind, word) =>
    list.length
      ? h("span", { class: `check check-${kind}`, title: list.map((c) => `${c.instance}: ${c.message}`).join("\n") }, `${word} (${list.map((c) => c.instance).join(", ")})`)
      : null;
  return [badge(refused, "refused", "refused"), badge(warned, "warning", "GPU memory warning")].filter(Boolean);
}

// What the model's status means now, in a few words: its progress, else its reason.
export function statusNote(item) {
  const progress = progressView(item, { compact: true });
  if (progress) return progress;
  const text = [item.reason, item.message].filter(Boolean).join(": ");
  return text ? h("small", { class: "why", title: text }, text) : null;
}

// An instance Pending or Failed because its model is not on disk: downloading, or the fetch
// failed (the instance then carries the model's reason).
export function waitsForModel(instance) {
  if (instance.phase === "Pending" && instance.reason === "Downloading") return true;
  const m = model.models.get(instance.model_id);
  return instance.phase === "Failed" && m?.status === "failed" && m.reason === instance.reason;
}

// ---- actions -------------------------------------------------------------------------------
function builtIn(item) {
  return item.model_id.startsWith("hash/");
}

export function canDownload(item) {
  return !item.local && !builtIn(item);
}

export function canRemove(item) {
  return item.declared || (!builtIn(item) && !item.local && (item.status !== "available" || !!item.cache_path));
}

// POST /models/{id}/download: the queued status at once; progress follows on the watch.
export async function downloadModel(item, onError) {
  try {
    const mark = asking();
    putModel(await post(`${modelPath(item.model_id)}/download`), mark);
    notify(`${item.model_id}: download requested`);
    return true;
  } catch (err) {
    failed(item, "Download", err, onError);
    return false;
  }
}

// A refused action: `onError(what, err)` shows it where the person looks; a notice otherwise.
function failed(item, what, err, onError) {
  if (onError) onError(what, err);
  else notify(`${item.model_id}: ${errorText(err)}`, "error");
}

// DELETE /models/{id}: a declared model is undeclared, its files deleted only if asked; one
// only in the cache has its files deleted. The API refuses to delete the files of a model an
// instance uses (409 MODEL_IN_USE): that answer is shown as it is.
export async function removeModel(item, onError) {
  const users = item.used_by || [];
  const inUse = users.length ? ` Refused while ${users.length === 1 ? "an instance uses" : "instances use"} it (${users.join(", ")}).` : "";
  let evict = true;
  if (item.declared) {
    if (model.readOnly) {
      notify(`Read-only: ${model.readOnly}`, "error");
      return false;
    }
    const choice = await confirmDialog(`Remove ${item.model_id}?`, `Its [models."${item.model_id}"] table is removed from the state file. Its files stay in the cache unless you also delete them.`, "Remove", {
      option: `Also delete its files from the cache.${inUse}`,
    });
    if (!choice) return false;
    evict = choice.option;
  } else {
    const sure = await confirmDialog(`Delete the files of ${item.model_id}?`, `It is not declared in the state file; this deletes its files from the cache.${inUse}`, "Delete files");
    if (!sure) return false;
  }
  try {
    const mark = asking();
    await del(`${modelPath(item.model_id)}${evict ? "?evict=true" : ""}`);
    notify(`${item.model_id}: ${evict ? "removed, its files deleted" : "removed from the state file"}`);
    if (evict && !item.declared) dropModel(item.model_id, mark);
    loadModels();
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.code === "STATE_READ_ONLY") refreshReadOnly();
    failed(item, evict ? "Deleting its files" : "Removing it", err, onError);
    return false;
  }
}

function busy(fn) {
  return async (event) => {
    const target = event.currentTarget;
    if (target.getAttribute("aria-busy") === "true" || target.getAttribute("aria-disabled") === "true") return;
    target.setAttribute("aria-busy", "true");
    try {
      await fn();
    } finally {
      target.removeAttribute("aria-busy");
    }
  };
}

// "Download now" and "Remove" for one model; `onError(what, err)` shows a refusal (a notice
// by default). Remove writes the state file only for a declared model.
export function modelButtons(item, { compact = false, onError } = {}) {
  const buttons = [];
  const size = compact ? " small" : "";
  if (canDownload(item)) {
    const downloading = item.status === "downloading";
    buttons.push(
      h(
        "button",
        {
          type: "button",
          class: `secondary${size}`,
          "aria-label": `Download ${item.model_id} now`,
          "aria-disabled": downloading ? "true" : null,
          title: downloading ? "downloading now" : item.status === "downloaded" ? "fetch again if the Hub has a newer commit" : null,
          dataset: { action: "download", model: item.model_id },
          onclick: busy(() => downloadModel(item, onError)),
        },
        "Download now",
      ),
    );
  }
  if (canRemove(item)) {
    const button = h(
      "button",
      {
        type: "button",
        class: `danger${size}`,
        "aria-label": `Remove ${item.model_id}`,
        dataset: { action: "remove", model: item.model_id },
        onclick: busy(() => removeModel(item, onError)),
      },
      "Remove",
    );
    buttons.push(item.declared ? markWritable(button) : button);
  }
  return buttons;
}
