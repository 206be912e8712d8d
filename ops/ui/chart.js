// Small SVG charts drawn by our own code (no library): a line chart over time buckets with
// axes, a legend, and a text description for screen readers. Colours are presentation
// attributes and classes, so the strict CSP (no inline styles) holds.

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** The smallest "nice" number (1, 2, 5 × 10^n) at or above `x`. */
export function niceCeil(x) {
  if (x <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

export function compact(n) {
  if (n >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
  return String(n);
}

/**
 * A line chart. `points`: [{at, ...counters}]; `series`: [{label, cls, value: p => n}].
 * `labelOf(at)` names a bucket on the x axis.
 */
export function lineChart({ id, title, points, series, labelOf }) {
  const W = 760, H = 260, L = 56, R = 12, T = 12, B = 36;
  const iw = W - L - R, ih = H - T - B;
  const top = Math.max(1, ...points.flatMap((p) => series.map((x) => x.value(p))));
  // Counts: small maxima on multiples of 4, so the four grid steps are whole numbers.
  const max = niceCeil(top) < 8 ? Math.max(4, Math.ceil(top / 4) * 4) : niceCeil(top);
  const n = points.length;
  const x = (i) => L + (n <= 1 ? iw / 2 : (i * iw) / (n - 1));
  const y = (v) => T + ih - (v / max) * ih;
  const total = (x) => points.reduce((a, p) => a + x.value(p), 0);
  const desc = series.map((x) => `${x.label}: ${total(x).toLocaleString()} in total`).join("; ");
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-labelledby": `${id}-t ${id}-d`,
    class: "chart",
    preserveAspectRatio: "xMidYMid meet",
  });
  svg.append(s("title", { id: `${id}-t` }, title), s("desc", { id: `${id}-d` }, desc));
  const grid = s("g", { class: "grid" });
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    grid.append(
      s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, compact(v)),
    );
  }
  const ticks = Math.min(n, 8);
  for (let k = 0; k < ticks; k++) {
    const i = ticks === 1 ? 0 : Math.round((k * (n - 1)) / (ticks - 1));
    const anchor = ticks > 1 && k === 0 ? "start" : ticks > 1 && k === ticks - 1 ? "end" : "middle";
    grid.append(s("text", { x: x(i), y: H - 12, "text-anchor": anchor }, labelOf(points[i].at)));
  }
  svg.append(grid);
  for (const ser of series) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(ser.value(p)).toFixed(1)}`).join("");
    svg.append(s("path", { d, class: `line ${ser.cls}`, fill: "none" }));
  }
  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const ser of series) {
    const li = document.createElement("li");
    const swatch = s("svg", { width: 14, height: 14, "aria-hidden": "true" }, s("rect", { width: 14, height: 4, y: 5, class: `swatch ${ser.cls}` }));
    li.append(swatch, ` ${ser.label}: ${total(ser).toLocaleString()}`);
    legend.append(li);
  }
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption, svg, legend);
  return figure;
}
