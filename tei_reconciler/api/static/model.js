// What the dashboard knows, kept live: instances (from the /events watch), the traffic of the
// last minute (from the /traffic watch) and whether the state file may be written (/plan).
// Views subscribe and redraw only what changed.

import { ApiError, getJSON, watch } from "./api.js";

export const model = {
  instances: new Map(), // name -> the API's instance JSON
  traffic: new Map(), // name -> the last minute's summary
  trafficSpan: 60,
  readOnly: null, // null (writable) or the reason the state file is read-only
  live: "connecting",
};

const listeners = new Set();

// fn(kind, name): kind is "instance", "deleted", "reset", "traffic", "readonly" or "live".
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(kind, name) {
  for (const fn of [...listeners]) fn(kind, name);
}

export function putInstance(item) {
  model.instances.set(item.name, item);
  emit("instance", item.name);
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

// The instance watch: every status change as it happens. On each (re)connect the full list
// is read once (it also holds instances the controller has not observed yet); an update or a
// deletion seen on the stream meanwhile wins over that list, which may be older.
export function startWatching(signal) {
  let seen = null;
  const load = async () => {
    seen = new Map();
    try {
      const items = await getJSON("/instances", { signal });
      const fresh = new Map(items.map((i) => [i.name, i]));
      for (const [name, change] of seen) {
        if (change === null) fresh.delete(name);
        else fresh.set(name, change);
      }
      seen = null;
      model.instances = fresh;
      emit("reset");
    } catch (err) {
      seen = null;
      if (err.name !== "AbortError") setLive("retrying");
    }
  };
  watch("/events", {
    signal,
    onOpen: load,
    onState: (state) => setLive(state),
    onEvent: (name, data) => {
      if (name === "status") {
        seen?.set(data.name, data);
        putInstance(data);
      } else if (name === "deleted") {
        seen?.set(data.name, null);
        model.instances.delete(data.name);
        emit("deleted", data.name);
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
