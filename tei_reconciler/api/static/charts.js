// Small SVG line charts for the traffic panel: one series, its latest value, its maximum.
//
// Steps without a value (a latency with no request in that step) break the line instead of
// drawing a fake zero. Each chart carries a text summary for screen readers.

const NS = "http://www.w3.org/2000/svg";
const W = 320;
const H = 90;
const PAD = { top: 8, right: 6, bottom: 16, left: 6 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

// Draw `values` (numbers or null, oldest first, one per step) into `figure`.
export function lineChart(figure, { title, values, format, spanLabel, kind = "" }) {
  figure.replaceChildren();
  figure.className = `chart ${kind}`;
  const known = values.filter((v) => v !== null && v !== undefined);
  const latest = known.length ? known.at(-1) : null;
  const max = niceMax(Math.max(0, ...known));
  const caption = document.createElement("figcaption");
  const name = document.createElement("span");
  name.textContent = title;
  const now = document.createElement("strong");
  now.textContent = latest === null ? "–" : format(latest);
  caption.append(name, now);

  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    preserveAspectRatio: "none",
    "aria-label": `${title}, ${spanLabel}: ${latest === null ? "no data" : `latest ${format(latest)}`}, peak ${known.length ? format(Math.max(...known)) : "none"}`,
  });
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (values.length <= 1 ? plotW : (i * plotW) / (values.length - 1));
  const y = (v) => PAD.top + plotH - (v / max) * plotH;
  svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: PAD.top + plotH, y2: PAD.top + plotH, class: "axis" }));
  svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: PAD.top, y2: PAD.top, class: "grid" }));
  svg.append(el("text", { x: W - PAD.right, y: PAD.top + 9, "text-anchor": "end", class: "tick" }, format(max)));
  svg.append(el("text", { x: PAD.left, y: H - 3, class: "tick" }, spanLabel));
  svg.append(el("text", { x: W - PAD.right, y: H - 3, "text-anchor": "end", class: "tick" }, "now"));

  // Runs of consecutive known values: a path (and an area under it) per run.
  let run = [];
  const flush = () => {
    if (!run.length) return;
    const d = run.map(([i, v], n) => `${n ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
    if (run.length > 1) {
      const base = PAD.top + plotH;
      svg.append(el("path", { d: `${d}L${x(run.at(-1)[0]).toFixed(1)},${base}L${x(run[0][0]).toFixed(1)},${base}Z`, class: "area" }));
      svg.append(el("path", { d, class: "line" }));
    } else {
      svg.append(el("circle", { cx: x(run[0][0]), cy: y(run[0][1]), r: 2, class: "dot" }));
    }
    run = [];
  };
  values.forEach((v, i) => {
    if (v === null || v === undefined) flush();
    else run.push([i, v]);
  });
  flush();
  figure.append(caption, svg);
}

export function formatRate(v) {
  return v >= 100 ? `${v.toFixed(0)}/s` : v >= 10 ? `${v.toFixed(1)}/s` : `${v.toFixed(2)}/s`;
}

export function formatMs(v) {
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : v >= 10 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`;
}

export function formatPercent(v) {
  return v === 0 ? "0%" : v < 0.001 ? "<0.1%" : `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`;
}
