// Webhook endpoints (`/v1/webhooks`): the list, each endpoint's recent deliveries, and a
// test event on demand. Creating and rotating secrets stay in the API (a secret is shown
// once, which the API reply does).

import { api, ApiError } from "../api.js";
import { h, pill, time, table, errorBox } from "../dom.js";

export async function render(view, { stale }) {
  view.append(h("h1", { id: "page-title", tabindex: "-1" }, "Webhooks"));
  let r;
  try {
    r = await api("/v1/webhooks");
  } catch (e) {
    if (e instanceof ApiError && e.code === "not_enabled") {
      view.append(h("p", {}, "Webhooks are not enabled on this server."));
      return;
    }
    throw e;
  }
  if (stale()) return;
  const result = h("div", { "aria-live": "polite" });
  const test = (w) =>
    h("button", {
      type: "button",
      "aria-label": `Send a test event to ${w.url}`,
      onclick: async () => {
        try {
          const t = await api(`/v1/webhooks/${encodeURIComponent(w.id)}/test`, { method: "POST", body: {} });
          result.replaceChildren(h("p", { class: t.delivered ? "ok" : "warn" }, t.delivered ? `Delivered to ${w.url} (${t.status}, ${t.duration_ms} ms).` : `Not delivered to ${w.url}: ${t.error || t.status}.`));
        } catch (e) {
          result.replaceChildren(errorBox(e.message));
        }
      },
    }, "Send test");
  view.append(
    table(
      "Endpoints",
      [
        ["URL", (w) => h("code", {}, w.url)],
        ["Events", (w) => (w.events && w.events.length ? w.events.join(", ") : "every event")],
        ["State", (w) => (w.enabled ? pill("enabled", "ok") : pill(`disabled${w.disabled_reason ? ": " + w.disabled_reason : ""}`, "failed"))],
        ["Description", (w) => w.description || ""],
        ["Created", (w) => time(w.created_at)],
        ["", test],
      ],
      r.webhooks,
      "No webhook endpoints. Register one with POST /v1/webhooks (the secret is shown once, in the reply).",
    ),
    result,
  );
}
