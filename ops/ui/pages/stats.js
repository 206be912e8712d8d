// Statistics: counters over a chosen range (`/v1/stats/series`), per day or per hour, as
// two SVG charts (delivery, engagement), totals with rates, and the numbers as a table.

import { api, withQuery } from "../api.js";
import { h, field, table } from "../dom.js";
import { lineChart } from "../chart.js";

const DAY = 86_400_000;

const day = (ms) => new Date(ms).toISOString().slice(0, 10);

/** The range of the query: `from`/`to` as UTC dates (inclusive), default the last 30 days. */
function range(params) {
  const tomorrow = Math.floor(Date.now() / DAY) * DAY + DAY;
  const to = params.get("to") ? Date.parse(params.get("to") + "T00:00:00Z") + DAY : tomorrow;
  const from = params.get("from") ? Date.parse(params.get("from") + "T00:00:00Z") : to - 30 * DAY;
  const interval = params.get("interval") === "hour" ? "hour" : "day";
  if (Number.isNaN(from) || Number.isNaN(to)) return { from: tomorrow - 30 * DAY, to: tomorrow, interval, bad: true };
  return { from, to, interval };
}

const pct = (a, b) => (b ? `${((100 * a) / b).toFixed(1)} %` : "–");

function totals(t) {
  const bounced = t.bounced_permanent + t.bounced_transient;
  const rows = [
    ["Accepted", t.accepted, ""],
    ["Delivered", t.delivered, pct(t.delivered, t.accepted)],
    ["Bounced", bounced, pct(bounced, t.accepted)],
    ["Deferred (attempts)", t.deferred, ""],
    ["Complaints", t.complained, pct(t.complained, t.delivered)],
    ["Suppressed", t.suppressed, ""],
    ["Unique opens", t.unique_opened, pct(t.unique_opened, t.delivered)],
    ["Unique clicks", t.unique_clicked, pct(t.unique_clicked, t.delivered)],
  ];
  return h(
    "dl",
    { class: "totals" },
    rows.map(([k, v, rate]) =>
      h("div", {}, h("dt", {}, k), h("dd", {}, v.toLocaleString(), rate ? h("small", {}, ` ${rate}`) : null)),
    ),
  );
}

function form(r) {
  const from = h("input", { type: "date", value: day(r.from), required: true });
  const to = h("input", { type: "date", value: day(r.to - DAY), required: true });
  const interval = h(
    "select",
    {},
    h("option", { value: "day", selected: r.interval === "day" }, "per day"),
    h("option", { value: "hour", selected: r.interval === "hour" }, "per hour"),
  );
  const go = (f, t, i) => (location.hash = withQuery("#/stats", { from: f, to: t, interval: i }));
  const preset = (days, label) =>
    h("button", { type: "button", onclick: () => go(day(Date.now() - (days - 1) * DAY), day(Date.now()), days > 2 ? "day" : "hour") }, label);
  return h(
    "form",
    { class: "inline", "aria-label": "Range", onsubmit: (e) => (e.preventDefault(), go(from.value, to.value, interval.value)) },
    field("stats-from", "From (UTC)", from),
    field("stats-to", "To (UTC, inclusive)", to),
    field("stats-interval", "Buckets", interval),
    h("button", { type: "submit" }, "Show"),
    h("span", { class: "presets", role: "group", "aria-label": "Presets" }, preset(1, "Today"), preset(7, "7 days"), preset(30, "30 days")),
  );
}

/** The numbers behind the charts, as a table built when first opened (720 rows per hour
 * over 30 days would otherwise delay the charts). */
function numbers(s) {
  const details = h("details", {}, h("summary", {}, "The numbers"));
  details.addEventListener("toggle", () => {
    if (!details.open || details.querySelector("table")) return;
    details.append(
      table(
        `Counters per ${s.interval} (UTC)`,
        [
          ["Start", (p) => p.at],
          ["Accepted", (p) => p.accepted],
          ["Delivered", (p) => p.delivered],
          ["Deferred", (p) => p.deferred],
          ["Bounced", (p) => p.bounced_permanent + p.bounced_transient],
          ["Opens", (p) => p.opened],
          ["Clicks", (p) => p.clicked],
          ["Complaints", (p) => p.complained],
        ],
        s.points,
      ),
    );
  });
  return details;
}

export async function render(view, { params, stale }) {
  const r = range(params);
  view.append(h("h1", { id: "page-title", tabindex: "-1" }, "Statistics"), form(r));
  if (r.bad) {
    view.append(h("p", { class: "error", role: "alert" }, "Those dates are not valid (YYYY-MM-DD); showing the last 30 days."));
  } else if (!(r.from < r.to)) {
    view.append(h("p", { class: "error", role: "alert" }, "The start date must be on or before the end date."));
    return;
  }
  const body = h("div", { class: "busy", "aria-busy": "true" }, "Loading…");
  view.append(body);
  const q = { from: new Date(r.from).toISOString(), to: new Date(r.to).toISOString(), interval: r.interval };
  const s = await api(withQuery("/v1/stats/series", q));
  if (stale()) return;
  const labelOf = (at) => (r.interval === "day" ? at.slice(5, 10) : at.slice(5, 13).replace("T", " ") + "h");
  const v = (k) => (p) => p[k];
  body.replaceChildren(
    totals(s.total),
    lineChart({
      id: "chart-delivery",
      title: `Delivery per ${s.interval}`,
      points: s.points,
      labelOf,
      series: [
        { label: "Accepted", cls: "c1", value: v("accepted") },
        { label: "Delivered", cls: "c2", value: v("delivered") },
        { label: "Deferred", cls: "c3", value: v("deferred") },
        { label: "Bounced", cls: "c4", value: (p) => p.bounced_permanent + p.bounced_transient },
      ],
    }),
    lineChart({
      id: "chart-engagement",
      title: `Engagement per ${s.interval}`,
      points: s.points,
      labelOf,
      series: [
        { label: "Opens", cls: "c5", value: v("opened") },
        { label: "Unique opens", cls: "c6", value: v("unique_opened") },
        { label: "Clicks", cls: "c7", value: v("clicked") },
        { label: "Complaints", cls: "c4", value: v("complained") },
      ],
    }),
    numbers(s),
  );
  body.classList.remove("busy");
  body.removeAttribute("aria-busy");
  body.id = "stats-ready";
  performance.mark("herald:stats-rendered");
}
