// One model: its status and download progress (live), what its files say it is, the check
// before start of each instance on it, the instances using it, its events, and its actions.

import { getJSON } from "./api.js";
import { model, subscribe } from "./model.js";
import { bytes, checkBadges, modelBadge, modelButtons, modelPath, parameters, progressView } from "./modelkit.js";
import { errorText, eventsTable, h, phaseBadge, readyText, when } from "./ui.js";

function field(label, value) {
  return [h("dt", {}, label), h("dd", {}, value ?? "–")];
}

function section(id, title, ...content) {
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...content);
}

function statusFacts(item) {
  const reason = [item.reason, item.message].filter(Boolean).join(": ");
  const declared = item.declared ? (item.keep ? "yes, kept on disk with no instance on it (keep = true)" : "yes") : "no (wanted by its instances only)";
  return h(
    "dl",
    { class: "facts", id: "model-status" },
    field("Status", h("span", {}, modelBadge(item), reason ? ` ${reason}` : "")),
    item.status === "downloading" ? field("Progress", progressView(item)) : null,
    field("Revision", item.revision || "main"),
    field("Commit on disk", item.commit ? h("code", {}, item.commit) : null),
    field("Declared", item.local ? "a local directory: inspected, never fetched" : declared),
    field("Size on disk", item.cache_size_bytes !== undefined ? bytes(item.cache_size_bytes) : null),
    field("Cache path", item.cache_path ? h("code", {}, item.cache_path) : null),
    field("Known since", item.added_at ? when(item.added_at) : null),
    item.failures ? field("Failed fetches in a row", String(item.failures)) : null,
    item.retry_at ? field("Next attempt", when(item.retry_at)) : null,
  );
}

const METADATA = [
  ["Architecture", (m) => m.architecture],
  ["Model type", (m) => m.model_type],
  ["Parameters", (m) => parameters(m)],
  ["Dtype", (m) => m.dtype],
  ["Hidden size", (m) => m.hidden_size],
  ["Max positions", (m) => m.max_position_embeddings],
  ["Vocabulary", (m) => m.vocab_size],
  ["Layers", (m) => m.num_hidden_layers],
  ["Attention heads", (m) => m.num_attention_heads],
  ["Weights on disk", (m) => (m.weights_bytes !== undefined ? bytes(m.weights_bytes) : null)],
  ["Snapshot on disk", (m) => (m.size_bytes !== undefined ? bytes(m.size_bytes) : null)],
];

function metadataFacts(item) {
  const meta = item.metadata;
  if (!meta) {
    const why =
      item.status === "downloaded"
        ? "Its config.json could not be read."
        : item.reason === "ServedWithoutCache"
          ? "Its binary serves it without files in the cache."
          : "Read from config.json and the safetensors headers once the model is on disk.";
    return h("p", { class: "muted" }, why);
  }
  return h("dl", { class: "facts", id: "model-metadata" }, METADATA.flatMap(([label, pick]) => field(label, pick(meta) ?? null)));
}

function checksView(item) {
  const checks = item.checks || [];
  if (!checks.length) {
    const users = item.used_by || [];
    return h("p", { class: "muted" }, users.length ? "No instance on it was refused or warned at its start." : "No instance uses it.");
  }
  return h(
    "ul",
    { class: "checks", id: "model-checks" },
    checks.map((c) =>
      h(
        "li",
        { class: `check-${c.verdict}` },
        h("strong", {}, c.verdict === "refused" ? "Refused" : "Warning"),
        " for ",
        h("a", { href: `#/instances/${c.instance}` }, c.instance),
        ` (${c.reason}): ${c.message}`,
        c.at ? h("span", { class: "muted" }, " — ", when(c.at)) : null,
      ),
    ),
  );
}

function usersTable(item) {
  const users = item.used_by || [];
  if (!users.length) return h("p", { class: "muted" }, "No instance uses it.");
  return h(
    "table",
    { class: "plain users" },
    h("thead", {}, h("tr", {}, ["Instance", "Phase", "Ready", "Reason"].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      users.map((name) => {
        const inst = model.instances.get(name);
        return h(
          "tr",
          { dataset: { name } },
          h("th", { scope: "row" }, h("a", { href: `#/instances/${name}` }, name)),
          h("td", {}, inst ? phaseBadge(inst) : "–"),
          h("td", {}, inst ? readyText(inst) : "–"),
          h("td", {}, inst ? [inst.reason, inst.message].filter(Boolean).join(": ") : ""),
        );
      }),
    ),
  );
}

// What the "Used by" table shows of each instance (a health check alone changes none of it).
function usersShown(item) {
  return (item.used_by || []).map((name) => {
    const inst = model.instances.get(name);
    return [name, inst?.phase, inst?.ready, inst?.reason, inst?.message];
  });
}


export function mountModel(main, id) {
  const controller = new AbortController();
  const signal = controller.signal;
  const title = h("h1", {}, id);
  const tools = h("div", { class: "tools" });
  const header = h("div", { class: "heading" }, title, tools);
  const refusal = h("div", { class: "banner error", id: "model-error", role: "alert", tabindex: "-1", hidden: true });
  tools.addEventListener("click", () => (refusal.hidden = true), true); // a new try: the last refusal goes
  const gone = h("p", { class: "banner warn", role: "status", hidden: true }, `${id} is not declared, used or cached (any more).`);
  const status = h("div");
  const checks = h("div");
  const metadata = h("div");
  const users = h("div");
  const events = h("div");

  main.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/models" }, "Models"), " / ", h("span", { "aria-current": "page" }, id)),
    header,
    refusal,
    gone,
    h(
      "div",
      { class: "columns" },
      h("div", {}, section("m-status", "Status", status), section("m-checks", "Check before start", checks)),
      h("div", {}, section("m-metadata", "What its files say", metadata), section("m-users", "Used by", users)),
    ),
    section("m-events", "Events", events),
  );

  function showError(what, err) {
    refusal.replaceChildren(h("p", {}, h("strong", {}, `${what} was refused. `), errorText(err)));
    refusal.hidden = false;
    refusal.focus();
  }

  const shown = new Map(); // part -> what it was drawn for
  function redraw(part, view, item, inputs) {
    const key = JSON.stringify(inputs);
    if (shown.get(part) === key) return;
    shown.set(part, key);
    part.replaceChildren(view(item));
  }

  let drawn = null; // status and reason last drawn: the events are read again when they change
  let offered = null; // what the action buttons were drawn for
  function draw() {
    const item = model.models.get(id);
    gone.hidden = !!item || !model.modelsLoaded;
    if (!item) {
      title.replaceChildren(id);
      tools.replaceChildren();
      offered = null;
      return;
    }
    // The buttons are redrawn only when what they offer changes (not at each progress step),
    // so keyboard focus stays on them while a download runs.
    const offer = JSON.stringify([item.status, item.declared, item.local, item.used_by || [], item.cache_path || ""]);
    if (offer !== offered) {
      offered = offer;
      const focused = tools.contains(document.activeElement) ? [...tools.children].indexOf(document.activeElement) : -1;
      tools.replaceChildren(...modelButtons(item, { onError: showError }));
      if (focused >= 0) tools.children[Math.min(focused, tools.children.length - 1)]?.focus();
    }
    title.replaceChildren(id, " ", modelBadge(item), ...checkBadges(item));
    status.replaceChildren(statusFacts(item));
    // The parts with links are redrawn only when what they show changes (not at each
    // progress step), so a pointer or keyboard focus on them stays.
    redraw(checks, checksView, item, [item.checks, item.used_by]);
    redraw(metadata, metadataFacts, item, [item.metadata, item.status, item.reason]);
    redraw(users, usersTable, item, usersShown(item));
    const now = `${item.status}\n${item.reason}`;
    if (now !== drawn) {
      drawn = now;
      loadEvents();
    }
  }

  let eventsPending = false;
  async function loadEvents() {
    if (eventsPending) return;
    eventsPending = true;
    try {
      events.replaceChildren(eventsTable(await getJSON(`${modelPath(id)}/events`, { signal })));
    } catch (err) {
      if (err.name !== "AbortError") events.replaceChildren(h("p", { class: "muted" }, errorText(err)));
    } finally {
      eventsPending = false;
    }
  }

  draw();
  const unsubscribe = subscribe((kind, changed) => {
    if ((kind === "model" && changed === id) || kind === "models" || kind === "readonly") draw();
    else if (["instance", "deleted", "reset"].includes(kind) && model.models.has(id)) {
      const item = model.models.get(id);
      redraw(users, usersTable, item, usersShown(item));
    }
  });
  return () => {
    unsubscribe();
    controller.abort();
  };
}
