// The dashboard's shell: the live watches, the read-only banner, sign-in, and a hash router
// over six views (instances, one instance, models, one model, the state file, a new instance).

import { onTokenNeeded } from "./api.js";
import { mountCreate } from "./create.js";
import { mountInstance } from "./instance.js";
import { mountInstances } from "./instances.js";
import { mountModel } from "./model-page.js";
import { mountModels } from "./models.js";
import { model, refreshReadOnly, startWatching, subscribe } from "./model.js";
import { mountState } from "./statefile.js";
import { markWritable, refreshWritable, tickAges } from "./ui.js";

const ROUTES = [
  [/^#?\/?$/, "instances", mountInstances],
  [/^#\/instances\/([a-z0-9-]+)$/, "instances", mountInstance],
  [/^#\/models$/, "models", mountModels],
  [/^#\/models\/([^/]+)$/, "models", mountModel],
  [/^#\/state$/, "state", mountState],
  [/^#\/new$/, "new", mountCreate],
];

let unmount = null;

function route() {
  refreshReadOnly(); // cheap, and a file can become GitOps-owned at any time
  const main = document.getElementById("main");
  unmount?.();
  unmount = null;
  main.replaceChildren();
  const hash = location.hash;
  for (const [pattern, section, mount] of ROUTES) {
    const match = pattern.exec(hash);
    if (!match) continue;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    let params;
    try {
      params = match.slice(1).map(decodeURIComponent);
    } catch {
      break; // a malformed %-escape: no such page
    }
    unmount = mount(main, ...params) || null;
    return;
  }
  main.append(Object.assign(document.createElement("p"), { textContent: "No such page." }));
}

function showLive() {
  const live = document.getElementById("live");
  const text = { live: "live", retrying: "reconnecting…", connecting: "connecting…" }[model.live] || model.live;
  live.textContent = text;
  live.className = `live state-${model.live}`;
}

function showReadOnly() {
  const banner = document.getElementById("readonly");
  banner.hidden = !model.readOnly;
  banner.textContent = model.readOnly
    ? `The state file is read-only, so the actions here are disabled: ${model.readOnly}.`
    : "";
  refreshWritable();
}

function askForToken(note) {
  const dialog = document.getElementById("login");
  const input = dialog.querySelector("#login-token");
  dialog.querySelector("#login-text").textContent = `${note ? `${note} ` : ""}The API asks for a bearer token. It is kept in this tab only.`;
  input.value = "";
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok" ? input.value.trim() : ""), { once: true });
  });
}

function start() {
  onTokenNeeded(askForToken);
  markWritable(document.querySelector('[data-nav="new"]'));
  subscribe((kind) => {
    if (kind === "live") showLive();
    if (kind === "readonly") showReadOnly();
  });
  const controller = new AbortController();
  startWatching(controller.signal);
  window.addEventListener("hashchange", () => {
    route();
    document.getElementById("main").focus({ preventScroll: true });
  });
  setInterval(() => tickAges(), 1000);
  route();
}

start();
