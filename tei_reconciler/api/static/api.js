// The REST API as the dashboard uses it: JSON calls, the error envelope, and watches.
//
// Every path is resolved against the API root (the folder above /ui/), so the dashboard works
// behind a reverse proxy that adds a path prefix. A bearer token, when the API asks for one,
// is kept in this tab's sessionStorage and sent on every call. Watches read Server-Sent
// Events through fetch (not EventSource, which cannot send an Authorization header).

const ROOT = new URL("../", location.href);
const TOKEN_KEY = "tei-reconciler-token";

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || [];
  }
  // "CODE: message" as the API wrote it.
  get text() {
    return this.code ? `${this.code}: ${this.message}` : this.message;
  }
}

export function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), ROOT);
}

let askToken = null; // set by the app: () => Promise<string> asking the person for a token
let asking = null; // the prompt in progress: every call refused meanwhile waits for it

export function onTokenNeeded(prompt) {
  askToken = prompt;
}

function headers(extra) {
  const out = { ...extra };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not the envelope: a proxy's page, a dropped connection
  }
  if (body && typeof body.error === "string") {
    return new ApiError(response.status, body.code || "", body.error, body.details);
  }
  return new ApiError(response.status, `HTTP_${response.status}`, response.statusText || "request failed");
}

// fetch() with the token; a 401 asks for a token once and retries.
export async function request(method, path, { body, type, headers: extra, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const init = { method, headers: headers(extra), signal };
    if (body !== undefined) {
      init.body = typeof body === "string" ? body : JSON.stringify(body);
      init.headers["Content-Type"] = type || "application/json";
    }
    let response;
    try {
      response = await fetch(apiUrl(path), init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "UNREACHABLE", "the reconciler cannot be reached");
    }
    if (response.status === 401 && askToken && attempt < 5) {
      const sent = init.headers.Authorization;
      const current = sessionStorage.getItem(TOKEN_KEY);
      if (current && sent !== `Bearer ${current}`) continue; // signed in meanwhile: retry
      asking ??= askToken(sent ? "That token was refused." : "").finally(() => { asking = null; });
      const token = await asking;
      if (token) {
        sessionStorage.setItem(TOKEN_KEY, token);
        continue;
      }
    }
    if (!response.ok && response.status !== 304) throw await errorOf(response);
    return response;
  }
}

export async function getJSON(path, options) {
  return (await request("GET", path, options)).json();
}

export async function post(path, body) {
  return (await request("POST", path, body === undefined ? {} : { body })).json();
}

export async function del(path) {
  await request("DELETE", path);
}

// Follow a text/event-stream: calls onEvent(name, data) per event until `signal` aborts;
// reconnects with a growing delay, calling onState("live" | "retrying", error).
export async function watch(path, { onEvent, onOpen, onState, signal }) {
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const response = await request("GET", path, {
        headers: { Accept: "text/event-stream" },
        signal,
      });
      delay = 1000;
      onState?.("live");
      onOpen?.();
      await readEvents(response.body, onEvent, signal);
      if (signal.aborted) return;
      onState?.("retrying", null);
    } catch (err) {
      if (signal.aborted) return;
      onState?.("retrying", err);
      if (err instanceof ApiError && err.status >= 400 && err.status < 500) return; // 404, 401
    }
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, delay);
      signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
    delay = Math.min(delay * 2, 15000);
  }
}

async function readEvents(stream, onEvent, signal) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const stop = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", stop, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of frame.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  } finally {
    signal.removeEventListener("abort", stop);
  }
}
