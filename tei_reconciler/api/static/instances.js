// The instance table: one row per instance, updated in place from the live watch, with a
// count per phase, a filter, and each row's actions.

import { formatMs, formatPercent, formatRate } from "./charts.js";
import { model, sortedNames, subscribe } from "./model.js";
import { modelHref, modelLink, progressView, waitsForModel } from "./modelkit.js";
import { actionButtons, age, gpuText, h, markWritable, phaseBadge, readyText, rolloutBadge } from "./ui.js";

const PHASES = ["Pending", "Starting", "Running", "Stopping", "Stopped", "CrashLoopBackOff", "Failed"];
const COLUMNS = ["Name", "Phase", "Ready", "Model", "GPU", "Port", "Restarts", "Age", "Traffic (1 min)", "Rollout", "Actions"];

function trafficCell(name) {
  const t = model.traffic.get(name);
  if (!t || !t.requests) return h("span", { class: "muted" }, "–");
  const parts = [formatRate(t.rate)];
  if (t.errors) parts.push(`${formatPercent(t.error_ratio)} err`);
  if (t.p99_ms !== null) parts.push(`p99 ${formatMs(t.p99_ms)}`);
  return h("span", { class: t.errors ? "traffic bad" : "traffic" }, parts.join(" · "));
}

// Whether the instance runs its desired spec: up to date, rolling out (what it waits for, in a
// few words), or failed (the old process keeps serving; the reason on hover and below).
function rolloutCell(item) {
  const rollout = item.rollout;
  if (!rollout || rollout.state === "complete") return rolloutBadge(rollout);
  const detail = rollout.state === "failed" ? rollout.reason : rollout.message;
  return [rolloutBadge(rollout), detail ? h("small", { class: "why", title: rollout.message }, detail) : null];
}

// Why an instance is not well, in a few words under its phase (the whole text on hover); a
// wait for its model (downloading, or a fetch that failed) links to the model.
function trouble(item) {
  if (!["CrashLoopBackOff", "Failed", "Pending"].includes(item.phase) && !(item.phase === "Running" && !item.ready)) return null;
  const text = [item.reason, item.message].filter(Boolean).join(": ");
  if (!text) return null;
  if (waitsForModel(item)) return h("small", { class: "why" }, h("a", { href: modelHref(item.model_id), title: text }, text));
  return h("small", { class: "why", title: text }, text);
}

// What a row shows of its model: a change of it redraws the model and phase cells alone (the
// row's buttons stay the same elements, so focus and a pointer on them are kept).
function modelSignature(item) {
  const m = model.models.get(item.model_id);
  return JSON.stringify([m?.status ?? null, m?.progress ?? null, waitsForModel(item)]);
}

function redrawModelCells(tr, item) {
  const signature = modelSignature(item);
  if (tr.dataset.modelSignature === signature) return;
  tr.dataset.modelSignature = signature;
  tr.querySelector("td.model").replaceWith(modelCell(item));
  tr.querySelector("td.phase-cell").replaceChildren(phaseBadge(item), ...[trouble(item)].filter(Boolean));
}

// The model, linked to its page, with its download progress while it downloads.
function modelCell(item) {
  const m = model.models.get(item.model_id);
  return h("td", { class: "model", title: item.model_id }, modelLink(item.model_id), m ? progressView(m, { compact: true }) : null);
}

function row(item) {
  const spec = item.spec || {};
  return h(
    "tr",
    { dataset: { name: item.name, phase: item.phase, modelSignature: modelSignature(item) } },
    h("th", { scope: "row" }, h("a", { href: `#/instances/${item.name}` }, item.name)),
    h("td", { class: "phase-cell" }, phaseBadge(item), trouble(item)),
    h("td", {}, readyText(item)),
    modelCell(item),
    h("td", {}, gpuText(spec.gpu)),
    h("td", { class: "num" }, item.port ?? "–"),
    h("td", { class: "num" }, String(item.restarts ?? 0)),
    h("td", { class: "num" }, item.created_at ? age(item.created_at) : h("span", { class: "muted" }, "–")),
    h("td", { class: "traffic-cell" }, trafficCell(item.name)),
    h("td", { class: "rollout-cell" }, rolloutCell(item)),
    h("td", { class: "actions" }, actionButtons(item, { compact: true })),
  );
}

export function mountInstances(main) {
  let filter = "";
  let phaseFilter = null;
  const rows = new Map(); // name -> <tr>

  const search = h("input", {
    type: "search",
    id: "filter",
    placeholder: "name, model or phase",
    "aria-label": "Filter instances by name, model or phase",
    oninput: (e) => {
      filter = e.target.value.trim().toLowerCase();
      applyFilter();
    },
  });
  const chips = h("div", { class: "chips", role: "group", "aria-label": "Show instances in phase" });
  const count = h("p", { class: "muted", id: "shown", "aria-live": "polite" });
  const body = h("tbody");
  const table = h(
    "table",
    { class: "instances", "aria-describedby": "shown" },
    h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
    body,
  );
  const empty = h(
    "div",
    { class: "empty", hidden: true },
    h("p", {}, "No instances yet."),
    h("p", {}, markWritable(h("a", { class: "button", href: "#/new" }, "Create an instance")), " or ", h("a", { href: "#/state" }, "edit the state file"), "."),
  );
  main.append(
    h("div", { class: "heading" }, h("h1", {}, "Instances"), h("div", { class: "tools" }, search, markWritable(h("a", { class: "button", href: "#/new" }, "New instance")))),
    chips,
    count,
    h("div", { class: "table-wrap" }, table),
    empty,
  );

  function visible(item) {
    if (phaseFilter && item.phase !== phaseFilter) return false;
    if (!filter) return true;
    return [item.name, item.model_id, item.phase].some((v) => String(v).toLowerCase().includes(filter));
  }

  function applyFilter() {
    let shown = 0;
    for (const [name, tr] of rows) {
      const item = model.instances.get(name);
      tr.hidden = !item || !visible(item);
      if (!tr.hidden) shown += 1;
    }
    const total = rows.size;
    count.textContent = total === shown ? `${total} instance${total === 1 ? "" : "s"}` : `${shown} of ${total} instances shown`;
    empty.hidden = total > 0;
    table.hidden = total === 0;
  }

  function drawChips() {
    const counts = new Map(PHASES.map((p) => [p, 0]));
    for (const item of model.instances.values()) counts.set(item.phase, (counts.get(item.phase) || 0) + 1);
    chips.replaceChildren(
      ...PHASES.filter((p) => counts.get(p) > 0 || p === phaseFilter).map((p) =>
        h(
          "button",
          {
            type: "button",
            class: `chip phase-${p}`,
            "aria-pressed": String(phaseFilter === p),
            onclick: () => {
              phaseFilter = phaseFilter === p ? null : p;
              drawChips();
              applyFilter();
            },
          },
          `${p} `,
          h("strong", {}, String(counts.get(p))),
        ),
      ),
    );
  }

  function upsert(name) {
    const item = model.instances.get(name);
    const old = rows.get(name);
    if (!item) {
      old?.remove();
      rows.delete(name);
      return;
    }
    const fresh = row(item);
    // Keep keyboard focus where it was (the same control of the row) when a row is redrawn.
    const controls = (tr) => [...tr.querySelectorAll("a, button")];
    const focused = old?.contains(document.activeElement) ? controls(old).indexOf(document.activeElement) : -1;
    if (old) old.replaceWith(fresh);
    else {
      const names = sortedNames();
      const after = names.slice(names.indexOf(name) + 1).find((n) => rows.has(n));
      body.insertBefore(fresh, after ? rows.get(after) : null);
    }
    rows.set(name, fresh);
    if (focused >= 0) controls(fresh)[focused]?.focus();
  }

  function redrawAll() {
    for (const tr of rows.values()) tr.remove();
    rows.clear();
    for (const name of sortedNames()) {
      const tr = row(model.instances.get(name));
      rows.set(name, tr);
      body.append(tr);
    }
  }

  redrawAll();
  drawChips();
  applyFilter();
  return subscribe((kind, name) => {
    if (kind === "reset" || kind === "readonly") redrawAll();
    else if (kind === "instance" || kind === "deleted") upsert(name);
    else if (kind === "model" || kind === "models") {
      for (const [n, tr] of rows) {
        const item = model.instances.get(n);
        if (item && (kind === "models" || item.model_id === name)) redrawModelCells(tr, item);
      }
      return;
    } else if (kind === "traffic") {
      for (const [n, tr] of rows) tr.querySelector(".traffic-cell").replaceChildren(trafficCell(n));
      return;
    } else return;
    drawChips();
    applyFilter();
  });
}
