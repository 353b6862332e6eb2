// A small TOML highlighter: text in, one HTML string per line out.
//
// It tokenizes the way TOML reads (table headers, keys, strings of all four kinds, numbers,
// dates, booleans, arrays and inline tables, comments), carrying multi-line strings and
// arrays across lines. It never rejects input: what it does not understand is shown as is,
// so a half-typed file still highlights.

const DATE = /^\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:[Zz]|[+-]\d{2}:\d{2})?|^\d{2}:\d{2}:\d{2}(?:\.\d+)?/;
const NUMBER = /^[+-]?(?:0x[0-9A-Fa-f_]+|0o[0-7_]+|0b[01_]+|inf|nan|\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d[\d_]*)?)/;
const BARE_KEY = /^[A-Za-z0-9_-]+/;

export function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// [{cls, text}] for the whole input; cls is "" for plain text.
export function tokenize(text) {
  const out = [];
  const stack = []; // "[" arrays and "{" inline tables the scanner is inside
  let expectKey = true;
  let i = 0;
  const push = (cls, end) => {
    out.push({ cls, text: text.slice(i, end) });
    i = end;
  };
  const lineEnd = (from) => {
    const n = text.indexOf("\n", from);
    return n < 0 ? text.length : n;
  };
  // End of a single-line string starting at i (quote q), escapes honoured for '"'.
  const stringEnd = (q) => {
    let j = i + 1;
    const stop = lineEnd(i);
    while (j < stop) {
      if (q === '"' && text[j] === "\\") j += 2;
      else if (text[j] === q) return { end: j + 1, ok: true };
      else j += 1;
    }
    return { end: stop, ok: false };
  };
  const multiEnd = (q) => {
    let j = i + 3;
    while (j < text.length) {
      if (q === '"' && text[j] === "\\") j += 2;
      else if (text.startsWith(q.repeat(3), j)) {
        j += 3;
        while (text[j] === q && j < text.length) j += 1; // up to two quotes may close the content
        return j;
      } else j += 1;
    }
    return text.length;
  };

  while (i < text.length) {
    const c = text[i];
    const rest = text.slice(i, i + 64);
    if (c === "\n") {
      push("", i + 1);
      if (stack.length === 0) expectKey = true;
      continue;
    }
    if (c === " " || c === "\t" || c === "\r") {
      let j = i;
      while (j < text.length && (text[j] === " " || text[j] === "\t" || text[j] === "\r")) j += 1;
      push("", j);
      continue;
    }
    if (c === "#") {
      push("t-comment", lineEnd(i));
      continue;
    }
    if (expectKey && stack.length === 0 && c === "[") {
      const stop = lineEnd(i);
      const close = text.indexOf("]", i);
      let end = close < 0 || close > stop ? stop : close + 1;
      if (text[end] === "]" && text[i + 1] === "[") end += 1;
      push("t-table", end);
      expectKey = false;
      continue;
    }
    if (expectKey) {
      if (c === '"' || c === "'") {
        const s = stringEnd(c);
        push("t-key", s.end);
        continue;
      }
      const bare = BARE_KEY.exec(rest);
      if (bare) {
        push("t-key", i + bare[0].length);
        continue;
      }
      if (c === ".") {
        push("t-punct", i + 1);
        continue;
      }
      if (c === "=") {
        push("t-punct", i + 1);
        expectKey = false;
        continue;
      }
      if (c === "}" && stack.at(-1) === "{") {
        stack.pop();
        push("t-punct", i + 1);
        expectKey = false;
        continue;
      }
      push("t-bad", i + 1);
      continue;
    }
    // a value
    if (text.startsWith('"""', i) || text.startsWith("'''", i)) {
      push("t-string", multiEnd(c));
      continue;
    }
    if (c === '"' || c === "'") {
      const s = stringEnd(c);
      push(s.ok ? "t-string" : "t-bad", s.end);
      continue;
    }
    if (/^(true|false)\b/.test(rest)) {
      push("t-bool", i + (rest.startsWith("true") ? 4 : 5));
      continue;
    }
    const date = DATE.exec(rest);
    if (date) {
      push("t-date", i + date[0].length);
      continue;
    }
    const number = NUMBER.exec(rest);
    if (number) {
      push("t-number", i + number[0].length);
      continue;
    }
    if (c === "[" || c === "{") {
      stack.push(c);
      push("t-punct", i + 1);
      if (c === "{") expectKey = true;
      continue;
    }
    if (c === "]" || c === "}") {
      if (stack.length) stack.pop();
      push("t-punct", i + 1);
      continue;
    }
    if (c === ",") {
      push("t-punct", i + 1);
      if (stack.at(-1) === "{") expectKey = true;
      continue;
    }
    let j = i + 1;
    while (j < text.length && !/[\s,\]}#]/.test(text[j])) j += 1;
    push("t-bad", j);
  }
  return out;
}

// One HTML string per line of `text` (a final newline gives no extra empty line).
export function highlight(text) {
  const lines = [[]];
  for (const { cls, text: piece } of tokenize(text)) {
    const parts = piece.split("\n");
    parts.forEach((part, n) => {
      if (n > 0) lines.push([]);
      if (part) lines.at(-1).push(cls ? `<span class="${cls}">${escapeHtml(part)}</span>` : escapeHtml(part));
    });
  }
  if (lines.length > 1 && lines.at(-1).length === 0) lines.pop();
  return lines.map((parts) => parts.join(""));
}

// A value as TOML (JSON's string escapes are TOML's too).
export function tomlValue(value) {
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(", ")}]`;
  if (value && typeof value === "object") {
    const pairs = Object.entries(value).map(([k, v]) => `${tomlKey(k)} = ${tomlValue(v)}`);
    return `{ ${pairs.join(", ")} }`;
  }
  return String(value);
}

export function tomlKey(key) {
  return /^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key);
}

// An instance spec (the API's `spec`) as its [instances.<name>] table.
export function specToml(name, spec) {
  const lines = [`[instances.${tomlKey(name)}]`];
  for (const [key, value] of Object.entries(spec)) {
    if (key === "name" || value === null || value === undefined) continue;
    if (Array.isArray(value) && value.length === 0) continue;
    if (typeof value === "object" && !Array.isArray(value) && Object.keys(value).length === 0) continue;
    lines.push(`${tomlKey(key)} = ${tomlValue(value)}`);
  }
  return lines.join("\n") + "\n";
}
