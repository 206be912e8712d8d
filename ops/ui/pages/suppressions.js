// The suppression list (`/v1/suppressions`): filter by reason, page through, add an
// address by hand, lift one.

import { api, ApiError, withQuery } from "../api.js";
import { h, field, pill, time, table } from "../dom.js";

const REASONS = ["hard-bounce", "soft-bounces", "complaint", "unsubscribe", "manual"];

export async function render(view, { params, stale }) {
  const reason = params.get("reason") || "";
  view.append(h("h1", { id: "page-title", tabindex: "-1" }, "Suppressions"));
  view.append(h("p", {}, "Messages to these addresses are accepted but not sent."));
  const select = h(
    "select",
    { onchange: () => (location.hash = withQuery("#/suppressions", { reason: select.value })) },
    h("option", { value: "" }, "every reason"),
    REASONS.map((r) => h("option", { value: r, selected: r === reason }, r)),
  );
  const address = h("input", { type: "email", required: true, autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert" });
  const add = async (ev) => {
    ev.preventDefault();
    try {
      await api(`/v1/suppressions/${encodeURIComponent(address.value.trim())}`, { method: "PUT", body: { reason: "manual" } });
      location.hash = withQuery("#/suppressions", { reason, t: Date.now() });
    } catch (e) {
      if (!(e instanceof ApiError) || e.status === 401) throw e;
      error.textContent = e.message;
    }
  };
  view.append(
    h("form", { class: "inline", "aria-label": "Filter" }, field("sup-reason", "Reason", select)),
    h("form", { class: "inline", "aria-label": "Suppress an address", onsubmit: add }, field("sup-address", "Suppress an address", address), h("button", { type: "submit" }, "Suppress"), error),
  );
  const r = await api(withQuery("/v1/suppressions", { reason, cursor: params.get("cursor"), limit: 100 }));
  if (stale()) return;
  const lift = (s) =>
    h("button", {
      type: "button",
      "aria-label": `Lift the suppression of ${s.address}`,
      onclick: async (ev) => {
        ev.target.disabled = true;
        await api(`/v1/suppressions/${encodeURIComponent(s.address)}`, { method: "DELETE" });
        ev.target.closest("tr").remove();
      },
    }, "Lift");
  view.append(
    table(
      "Suppressed addresses",
      [
        ["Address", (s) => s.address],
        ["Reason", (s) => pill(s.reason, "neutral")],
        ["Detail", (s) => s.detail],
        ["Since", (s) => time(s.created_at)],
        ["Expires", (s) => (s.expires_at ? time(s.expires_at) : "never")],
        ["", lift],
      ],
      r.suppressions,
      "No suppressed addresses.",
    ),
    r.next_cursor ? h("p", {}, h("a", { href: withQuery("#/suppressions", { reason, cursor: r.next_cursor }) }, "Next page")) : null,
  );
}
