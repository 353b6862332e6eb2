// Shared pieces of the dashboard: an element builder, phase badges, ages, notices, the
// confirm dialog and the instance actions (start, stop, restart, delete).

import { ApiError, del, post } from "./api.js";
import { asking, model, putInstance, refreshReadOnly } from "./model.js";

// h("a", {href: "#/"}, "text", child, ...): attributes starting with "on" become listeners.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function duration(secs) {
  if (secs === null || secs === undefined || Number.isNaN(secs)) return "–";
  const s = Math.max(0, Math.floor(secs));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

// An element showing how long ago `iso` was; kept current by tickAges().
export function age(iso, suffix = "") {
  const node = h("time", { datetime: iso || "", title: iso || "" });
  if (iso) node.dataset.since = String(Date.parse(iso));
  if (suffix) node.dataset.suffix = suffix;
  node.textContent = iso ? duration((Date.now() - Date.parse(iso)) / 1000) + suffix : "–";
  return node;
}

export function tickAges(root = document) {
  const now = Date.now();
  for (const node of root.querySelectorAll("time[data-since]")) {
    node.textContent = duration((now - Number(node.dataset.since)) / 1000) + (node.dataset.suffix || "");
  }
}

// A moment as local "YYYY-MM-DD HH:MM:SS" (the exact ISO time on hover), plus how long ago.
export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  const local = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const node = h("span", { class: "when" }, h("time", { datetime: iso, title: iso }, local), " (");
  const ahead = (Date.parse(iso) - Date.now()) / 1000;
  if (ahead > 0) node.append(`in ${duration(ahead)})`);
  else node.append(age(iso), " ago)");
  return node;
}

export function phaseBadge(item) {
  const title = [item.reason, item.message].filter(Boolean).join(": ");
  return h("span", { class: `phase phase-${item.phase}`, title: title || null }, item.phase);
}

// How the instance stands against its desired spec (`rollout`): a badge, and what it waits for.
export function rolloutBadge(rollout) {
  if (!rollout) return h("span", { class: "muted" }, "–");
  const text = { complete: "up to date", progressing: "rolling out", failed: "failed" }[rollout.state] || rollout.state;
  const title = rollout.state === "complete" ? `spec ${rollout.spec_hash} (${rollout.strategy})` : `${rollout.reason}: ${rollout.message}`;
  return h("span", { class: `rollout rollout-${rollout.state}`, title }, text);
}

export function readyText(item) {
  return h("span", { class: item.ready ? "ready yes" : "ready no", title: item.ready ? "Ready: takes traffic" : "not Ready" }, item.ready ? "1/1" : "0/1");
}

export function gpuText(gpu) {
  if (Array.isArray(gpu)) return gpu.join(",");
  return gpu === null || gpu === undefined ? "–" : String(gpu);
}

// ---- notices -------------------------------------------------------------------------------
export function notify(message, kind = "info") {
  const box = document.getElementById("toasts");
  const close = h("button", { class: "link", "aria-label": "Dismiss", onclick: () => note.remove() }, "×");
  const note = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, h("span", {}, message), close);
  box.append(note);
  setTimeout(() => note.remove(), kind === "error" ? 12000 : 5000);
}

export function errorText(err) {
  if (err instanceof ApiError) return err.text;
  return String(err?.message || err);
}

// The native modal dialog (focus stays inside; Escape cancels). Resolves true on confirm, or,
// with `option` (the label of a checkbox in the dialog), {option: checked}; false on cancel.
export function confirmDialog(title, text, action, { option } = {}) {
  const dialog = document.getElementById("confirm");
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-text").textContent = text;
  dialog.querySelector("#confirm-ok").textContent = action;
  const box = dialog.querySelector("#confirm-option");
  const check = dialog.querySelector("#confirm-check");
  box.hidden = !option;
  check.checked = false;
  dialog.querySelector("#confirm-option-text").textContent = option || "";
  dialog.returnValue = "";
  dialog.showModal();
  dialog.querySelector("button[value=cancel]").focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const ok = dialog.returnValue === "ok";
        resolve(ok && option ? { option: check.checked } : ok);
      },
      { once: true },
    );
  });
}

// ---- actions -------------------------------------------------------------------------------
const VERBS = {
  start: { label: "Start", done: "set to running" },
  stop: { label: "Stop", done: "set to stopped" },
  restart: { label: "Restart", done: "restart requested" },
  delete: { label: "Delete", done: "deleted from the state file" },
};

export async function act(name, verb) {
  if (model.readOnly) {
    notify(`Read-only: ${model.readOnly}`, "error");
    return false;
  }
  if (verb === "delete") {
    const sure = await confirmDialog(`Delete ${name}?`, `Its process is stopped and its table is removed from the state file.`, "Delete");
    if (!sure) return false;
  }
  try {
    if (verb === "delete") await del(`/instances/${encodeURIComponent(name)}`);
    else {
      const mark = asking();
      putInstance(await post(`/instances/${encodeURIComponent(name)}/${verb}`), mark);
    }
    notify(`${name}: ${VERBS[verb].done}`);
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.code === "STATE_READ_ONLY") refreshReadOnly();
    notify(`${name}: ${errorText(err)}`, "error");
    return false;
  }
}

// Start or Stop (whichever applies), Restart and Delete for one instance.
export function actionButtons(item, { compact = false } = {}) {
  const verbs = [item.desired_state === "stopped" ? "start" : "stop", "restart", "delete"];
  return verbs.map((verb) => {
    const label = VERBS[verb].label;
    const button = h(
      "button",
      {
        type: "button",
        class: `${verb === "delete" ? "danger" : "secondary"}${compact ? " small" : ""}`,
        "aria-label": `${label} ${item.name}`,
        dataset: { action: verb, name: item.name },
        onclick: async (event) => {
          const target = event.currentTarget;
          if (target.getAttribute("aria-busy") === "true") return;
          target.setAttribute("aria-busy", "true");
          try {
            await act(item.name, verb);
          } finally {
            target.removeAttribute("aria-busy");
          }
        },
      },
      label,
    );
    markWritable(button);
    return button;
  });
}

// A control that writes the state file: disabled (but still focusable, with the reason) while
// the file is read-only.
export function markWritable(control) {
  control.classList.add("writes");
  if (control.tagName === "A") {
    control.addEventListener("click", (event) => {
      if (!model.readOnly) return;
      event.preventDefault();
      notify(`Read-only: ${model.readOnly}`, "error");
    });
  }
  applyReadOnly(control);
  return control;
}

export function applyReadOnly(control) {
  if (model.readOnly) {
    control.setAttribute("aria-disabled", "true");
    control.setAttribute("aria-describedby", "readonly");
    control.title = `Read-only: ${model.readOnly}`;
  } else {
    control.removeAttribute("aria-disabled");
    control.removeAttribute("aria-describedby");
    control.removeAttribute("title");
  }
}

export function refreshWritable(root = document) {
  for (const control of root.querySelectorAll(".writes")) applyReadOnly(control);
}

// The events of an instance or a model, newest first.
export function eventsTable(events) {
  if (!events.length) return h("p", { class: "muted" }, "No events.");
  return h(
    "table",
    { class: "plain" },
    h("thead", {}, h("tr", {}, ["Type", "Reason", "Count", "Last seen", "Message"].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      [...events].reverse().map((e) =>
        h(
          "tr",
          { class: e.type === "Warning" ? "warning" : "" },
          h("td", {}, e.type),
          h("td", {}, e.reason),
          h("td", { class: "num" }, String(e.count)),
          h("td", {}, age(e.last_time, " ago")),
          h("td", {}, e.message),
        ),
      ),
    ),
  );
}
