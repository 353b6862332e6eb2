// One instance: status, last exit, traffic charts, conditions, events, spec and its log.

import { ApiError, getJSON, watch } from "./api.js";
import { formatMs, formatPercent, formatRate, lineChart } from "./charts.js";
import { model, subscribe } from "./model.js";
import { modelBadge, modelHref, modelLink, progressView, waitsForModel } from "./modelkit.js";
import { highlight, specToml } from "./toml.js";
import { actionButtons, age, errorText, eventsTable, gpuText, h, phaseBadge, readyText, rolloutBadge, when } from "./ui.js";

const LOG_TAIL = 200;
const LOG_KEEP = 2000; // lines kept on the page while following

function field(label, value) {
  return [h("dt", {}, label), h("dd", {}, value ?? "–")];
}

// The model, linked to its page, with what the registry says of it (`.model-state` is
// redrawn alone as a download goes on, so the link keeps keyboard focus).
function modelState(item) {
  const m = model.models.get(item.model_id);
  return m ? [modelBadge(m), " ", progressView(m, { compact: true })] : [];
}

function modelField(item) {
  return h("span", { class: "model-field" }, modelLink(item.model_id), " ", h("span", { class: "model-state" }, modelState(item)));
}

// Pending while its model downloads (or Failed because it could not be fetched): say so first.
function modelWait(item) {
  if (!waitsForModel(item)) return null;
  const m = model.models.get(item.model_id);
  const downloading = item.reason === "Downloading";
  return h(
    "div",
    { class: `banner ${downloading ? "info" : "error"}`, id: "model-wait", role: "status" },
    h("p", {}, downloading ? "Waiting for its model to download: " : "Its model could not be fetched: ", h("a", { href: modelHref(item.model_id) }, item.model_id), "."),
    h("p", { class: "model-wait-detail" }, waitDetail(item, m)),
  );
}

function waitDetail(item, m) {
  const progress = item.reason === "Downloading" && m ? progressView(m) : null;
  return progress || [item.reason, item.message].filter(Boolean).join(": ");
}

// A model event: redraw only the parts that show the model's state.
function redrawModelParts(root, item) {
  root.querySelector(".model-state")?.replaceChildren(...modelState(item));
  const banner = root.querySelector("#model-wait");
  const wanted = modelWait(item);
  if (banner && wanted && banner.className === wanted.className) {
    banner.querySelector(".model-wait-detail").replaceChildren(waitDetail(item, model.models.get(item.model_id)));
  } else if (banner || wanted) {
    const holder = root.querySelector(".model-wait-holder");
    holder?.replaceChildren(...[wanted].filter(Boolean));
  }
}

function statusList(item) {
  const spec = item.spec || {};
  const reason = [item.reason, item.message].filter(Boolean).join(": ");
  return h(
    "dl",
    { class: "facts" },
    field("Model", modelField(item)),
    field("Desired state", item.desired_state),
    field("Phase", h("span", {}, phaseBadge(item), reason ? ` ${reason}` : "")),
    field("Ready", readyText(item)),
    field("Port", item.port),
    field("Prometheus port", item.prometheus_port),
    field("GPU", gpuText(spec.gpu)),
    field("PID", item.pid),
    field("Started", item.created_at ? when(item.created_at) : null),
    field("Restarts", String(item.restarts ?? 0)),
    field("Failed health checks in a row", String(item.health_check_failures ?? 0)),
    field("Last health check", item.last_health_check ? age(item.last_health_check, " ago") : null),
    item.backoff_until ? field("Next start no sooner than", when(item.backoff_until)) : null,
  );
}

// The rollout (kubectl rollout status) and every process of the instance: during a surge the
// new one starting beside the current one, then the old one draining after the switch.
function rolloutView(item) {
  const rollout = item.rollout;
  if (!rollout) return h("p", { class: "muted" }, "Not observed yet.");
  const facts = h(
    "dl",
    { class: "facts" },
    field("State", h("span", {}, rolloutBadge(rollout), rollout.state === "complete" ? "" : ` ${rollout.reason}`)),
    rollout.state === "complete" ? null : field("Message", rollout.message),
    field("Strategy", rollout.strategy),
    field("Desired spec", h("code", {}, rollout.spec_hash)),
    field("Running spec", rollout.current_spec_hash ? h("code", {}, rollout.current_spec_hash) : null),
    rollout.attempts ? field("Failed attempts", String(rollout.attempts)) : null,
  );
  const processes = item.processes || [];
  if (!processes.length) return facts;
  return h(
    "div",
    {},
    facts,
    h(
      "table",
      { class: "plain processes" },
      h("thead", {}, h("tr", {}, ["Role", "PID", "Port", "State", "Spec", "Started"].map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        processes.map((p) =>
          h(
            "tr",
            { dataset: { role: p.role } },
            h("th", { scope: "row" }, p.role),
            h("td", { class: "num" }, String(p.pid)),
            h("td", { class: "num" }, p.port ?? "–"),
            h("td", { class: `process-${p.state}` }, p.state),
            h("td", {}, h("code", {}, p.spec_hash)),
            h("td", {}, age(p.created_at, " ago")),
          ),
        ),
      ),
    ),
  );
}

function lastExit(item) {
  const last = item.last_exit;
  if (!last) return h("p", { class: "muted" }, "No process of this instance has ended yet.");
  const how = last.signal !== null ? `${last.signal_name || "signal"} (${last.signal})` : `exit code ${last.code}`;
  return h(
    "div",
    { class: "last-exit" },
    h("p", { class: "exit-message" }, last.message || how),
    h(
      "dl",
      { class: "facts" },
      field("Reason", last.reason),
      field(last.signal !== null ? "Signal" : "Exit code", last.signal !== null ? how : String(last.code ?? "unknown")),
      field("Finished", when(last.at)),
    ),
    last.last_lines?.length
      ? h("div", {}, h("h3", {}, "Last lines it wrote"), h("pre", { class: "log exit-lines" }, last.last_lines.join("\n")))
      : h("p", { class: "muted" }, "It wrote nothing before it ended."),
  );
}

function conditionsTable(item) {
  if (!item.conditions?.length) return h("p", { class: "muted" }, "None yet.");
  return h(
    "table",
    { class: "plain" },
    h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Since", "Message"].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      item.conditions.map((c) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, c.type),
          h("td", { class: `cond-${c.status}` }, c.status),
          h("td", {}, c.reason),
          h("td", {}, age(c.last_transition_time)),
          h("td", {}, c.message),
        ),
      ),
    ),
  );
}


function tomlBlock(text) {
  return h("pre", { class: "toml" }, ...highlight(text).map((html) => {
    const line = h("span", { class: "line" });
    line.innerHTML = html; // highlight() escapes every piece of text
    return line;
  }));
}

function section(id, title, ...content) {
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...content);
}

export function mountInstance(main, name) {
  const controller = new AbortController();
  const signal = controller.signal;
  const header = h("div", { class: "heading" });
  const gone = h("p", { class: "banner warn", role: "status", hidden: true }, `${name} is not in the state file any more.`);
  const waiting = h("div", { class: "model-wait-holder" });
  const status = h("div");
  const exit = h("div");
  const rollout = h("div");
  const charts = h("div", { class: "charts" });
  const conditions = h("div");
  const events = h("div");
  const spec = h("div");
  const log = h("pre", { class: "log", tabindex: "0", "aria-label": `Log of ${name}` });
  const logNote = h("p", { class: "muted", "aria-live": "polite" });
  let following = null;
  const followButton = h("button", { type: "button", class: "secondary", "aria-pressed": "false", onclick: () => toggleFollow() }, "Follow");

  main.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Instances"), " / ", h("span", { "aria-current": "page" }, name)),
    header,
    gone,
    waiting,
    h("div", { class: "columns" },
      h("div", {}, section("s-status", "Status", status), section("s-rollout", "Rollout", rollout), section("s-exit", "Last exit", exit), section("s-conditions", "Conditions", conditions)),
      h("div", {}, section("s-traffic", "Traffic", charts), section("s-spec", "Spec", spec)),
    ),
    section("s-events", "Events", events),
    section("s-logs", "Log", h("div", { class: "row" }, followButton, logNote), log),
  );

  function draw() {
    const item = model.instances.get(name);
    gone.hidden = !!item;
    if (!item) {
      header.replaceChildren(h("h1", {}, name));
      return;
    }
    header.replaceChildren(h("h1", {}, name, " ", phaseBadge(item)), h("div", { class: "tools" }, actionButtons(item)));
    status.replaceChildren(statusList(item));
    waiting.replaceChildren(...[modelWait(item)].filter(Boolean));
    rollout.replaceChildren(rolloutView(item));
    exit.replaceChildren(lastExit(item));
    conditions.replaceChildren(conditionsTable(item));
    spec.replaceChildren(tomlBlock(specToml(name, item.spec || {})));
  }

  let eventsPending = false;
  async function loadEvents() {
    if (eventsPending) return;
    eventsPending = true;
    try {
      events.replaceChildren(eventsTable(await getJSON(`/instances/${name}/events`, { signal })));
    } catch (err) {
      if (err.name !== "AbortError") events.replaceChildren(h("p", { class: "error" }, errorText(err)));
    } finally {
      eventsPending = false;
    }
  }

  function drawTraffic(snapshot) {
    const t = snapshot.instances[0];
    const span = `${Math.round(snapshot.span_secs / 60)} min ago`;
    const pick = (key) => t.points.map((p) => p[key]);
    const figures = [
      ["Requests", pick("rate"), formatRate, "rate"],
      ["Errors", t.points.map((p) => (p.requests ? p.error_ratio : null)), formatPercent, "errors"],
      ["p50 latency", pick("p50_ms"), formatMs, "p50"],
      ["p99 latency", pick("p99_ms"), formatMs, "p99"],
    ];
    charts.replaceChildren(
      ...figures.map(([title, values, format, kind]) => {
        const figure = h("figure");
        lineChart(figure, { title, values, format, spanLabel: span, kind });
        return figure;
      }),
    );
  }

  async function loadLog() {
    try {
      const body = await getJSON(`/instances/${name}/logs?start=-${LOG_TAIL}`, { signal });
      log.textContent = body.lines.join("\n");
      logNote.textContent = body.total_lines > body.lines.length ? `the last ${body.lines.length} of ${body.total_lines} lines` : `${body.total_lines} lines`;
      log.scrollTop = log.scrollHeight;
      return body.end;
    } catch (err) {
      if (err.name !== "AbortError") logNote.textContent = errorText(err);
      return null;
    }
  }

  async function toggleFollow() {
    if (following) {
      following.abort();
      following = null;
      followButton.setAttribute("aria-pressed", "false");
      followButton.textContent = "Follow";
      logNote.textContent = "stopped following";
      return;
    }
    following = new AbortController();
    signal.addEventListener("abort", () => following?.abort(), { once: true });
    followButton.setAttribute("aria-pressed", "true");
    followButton.textContent = "Stop following";
    const from = await loadLog();
    logNote.textContent = "following: new lines appear as they are written";
    watch(`/instances/${name}/logs?follow=true&start=${from ?? 0}`, {
      signal: following.signal,
      onEvent: (kind, data) => {
        if (kind !== "log") return;
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.append((log.textContent ? "\n" : "") + data.line);
        if (log.childNodes.length > LOG_KEEP) log.textContent = log.textContent.split("\n").slice(-LOG_KEEP).join("\n");
        if (atBottom) log.scrollTop = log.scrollHeight;
      },
    });
  }

  draw();
  loadEvents();
  loadLog();
  watch(`/instances/${name}/traffic`, {
    signal,
    onEvent: (kind, data) => kind === "traffic" && drawTraffic(data),
    onState: (state, err) => {
      if (err instanceof ApiError && err.status === 404) charts.replaceChildren(h("p", { class: "muted" }, "No traffic data."));
    },
  });
  const unsubscribe = subscribe((kind, changed) => {
    if ((kind === "instance" || kind === "deleted" || kind === "reset" || kind === "readonly") && (changed === name || !changed)) {
      draw();
      if (kind !== "readonly") loadEvents();
    } else if (kind === "models" || (kind === "model" && changed === model.instances.get(name)?.model_id)) {
      const item = model.instances.get(name);
      if (item) redrawModelParts(main, item);
    }
  });
  return () => {
    unsubscribe();
    controller.abort();
  };
}
