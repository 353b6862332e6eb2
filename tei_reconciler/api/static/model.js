// What the dashboard knows, kept live: instances and models (from the /events watch), the
// traffic of the last minute (from the /traffic watch) and whether the state file may be
// written (/plan). Views subscribe and redraw only what changed.

import { ApiError, getJSON, watch } from "./api.js";

export const model = {
  instances: new Map(), // name -> the API's instance JSON
  models: new Map(), // model_id -> the API's model JSON
  modelsLoaded: false, // the first GET /models has answered
  modelsError: null, // why the last GET /models failed, if it did
  traffic: new Map(), // name -> the last minute's summary
  trafficSpan: 60,
  readOnly: null, // null (writable) or the reason the state file is read-only
  live: "connecting",
};

const listeners = new Set();

// fn(kind, name): kind is "instance", "deleted", "reset", "model" (name: the model id),
// "models" (the whole list), "traffic", "readonly" or "live".
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(kind, name) {
  for (const fn of [...listeners]) fn(kind, name);
}

// The watch and a request's answer travel apart, so an answer may be older than what the watch
// has shown of the same object since the request was sent. `asking()` marks when a request (or
// a list read) is sent; its answer is put only where the watch said nothing of that object
// since, and a list keeps what the watch showed meanwhile.
let ticks = 0; // one per watch event
const heard = new Map(); // "instance/<name>" | "model/<id>" -> the tick the watch last spoke of it

function hear(key) {
  heard.set(key, ++ticks);
}

export function asking() {
  return ticks;
}

function stale(key, mark) {
  return mark !== null && (heard.get(key) ?? 0) > mark;
}

// `fresh` (a list read since `mark`) with what the watch showed of its `kind` since then.
function withHeard(fresh, kind, current, mark) {
  for (const [key, tick] of heard) {
    if (tick <= mark || !key.startsWith(`${kind}/`)) continue;
    const id = key.slice(kind.length + 1);
    if (current.has(id)) fresh.set(id, current.get(id));
    else fresh.delete(id);
  }
  return fresh;
}

// `mark`: when the request that answered `item` was sent (null: the watch's own word).
export function putInstance(item, mark = null) {
  if (stale(`instance/${item.name}`, mark)) return;
  model.instances.set(item.name, item);
  emit("instance", item.name);
}

export function putModel(item, mark = null) {
  if (stale(`model/${item.model_id}`, mark)) return;
  model.models.set(item.model_id, item);
  emit("model", item.model_id);
}

export function dropModel(id, mark = null) {
  if (stale(`model/${id}`, mark)) return;
  if (model.models.delete(id)) emit("model", id);
}

export function sortedNames() {
  return [...model.instances.keys()].sort();
}

export async function refreshReadOnly() {
  try {
    const plan = await getJSON("/plan");
    const reason = plan.read_only ? plan.read_only_reason || "the state file is read-only" : null;
    if (reason !== model.readOnly) {
      model.readOnly = reason;
      emit("readonly");
    }
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
  }
}

// The models as GET /models lists them, with what the watch showed while the list was on its way.
let modelsLoading = null;
let loadAgain = false; // asked while a load was on its way, which may have missed the change

let watching = null; // the signal of the app's watches, set by startWatching()

export function loadModels(signal = watching) {
  if (modelsLoading) {
    loadAgain = true;
    return modelsLoading;
  }
  modelsLoading = (async () => {
    const mark = asking();
    try {
      const items = await getJSON("/models", { signal });
      model.models = withHeard(new Map(items.map((m) => [m.model_id, m])), "model", model.models, mark);
      model.modelsLoaded = true;
      model.modelsError = null;
      emit("models");
    } catch (err) {
      if (err.name === "AbortError") return;
      if (!(err instanceof ApiError)) throw err;
      model.modelsError = err.text;
      emit("models");
    } finally {
      modelsLoading = null;
      if (loadAgain && !signal?.aborted) {
        loadAgain = false;
        loadModels(signal);
      }
    }
  })();
  return modelsLoading;
}

// Every change to the models the state file names, and download progress, arrives as `model`
// and `model_deleted` events. The check before start of each instance on a model comes from
// the instances' statuses, which change no model: the list is read again (once for a burst)
// when an instance appears, goes, changes model or changes reason.
const RELOAD_AFTER_MS = 250;
let reloadTimer = null;

function modelKey(item) {
  return item ? `${item.model_id}\n${item.reason}` : null;
}

function modelsMayHaveChanged(before, after, signal) {
  if (modelKey(before) === modelKey(after) || reloadTimer) return;
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    if (!signal.aborted) loadModels(signal);
  }, RELOAD_AFTER_MS);
}

// The instance watch: every status change as it happens. On each (re)connect the full list
// is read once (it also holds instances the controller has not observed yet), with what the
// stream showed while it was on its way.
export function startWatching(signal) {
  watching = signal;
  const load = async () => {
    const mark = asking();
    loadModels(signal);
    try {
      const items = await getJSON("/instances", { signal });
      model.instances = withHeard(new Map(items.map((i) => [i.name, i])), "instance", model.instances, mark);
      emit("reset");
    } catch (err) {
      if (err.name !== "AbortError") setLive("retrying");
    }
  };
  watch("/events", {
    signal,
    onOpen: load,
    onState: (state) => setLive(state),
    onEvent: (name, data) => {
      if (name === "status") {
        hear(`instance/${data.name}`);
        const before = model.instances.get(data.name);
        putInstance(data);
        modelsMayHaveChanged(before, data, signal);
      } else if (name === "deleted") {
        hear(`instance/${data.name}`);
        const before = model.instances.get(data.name);
        model.instances.delete(data.name);
        emit("deleted", data.name);
        modelsMayHaveChanged(before, null, signal);
      } else if (name === "model") {
        hear(`model/${data.model_id}`);
        putModel(data);
      } else if (name === "model_deleted") {
        hear(`model/${data.model_id}`);
        dropModel(data.model_id);
      }
    },
  });
  watch("/traffic", {
    signal,
    onEvent: (name, data) => {
      if (name !== "traffic") return;
      model.traffic = new Map(data.instances.map((t) => [t.instance, t]));
      model.trafficSpan = data.span_secs;
      emit("traffic");
    },
  });
}

function setLive(state) {
  if (model.live !== state) {
    model.live = state;
    emit("live");
  }
}
