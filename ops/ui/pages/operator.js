// Operator pages (operator key): accounts with their keys and SMTP users, providers and
// throttles (traffic shaping), and the log's consumer lag.

import { api, ApiError } from "../api.js";
import { h, pill, time, table } from "../dom.js";

const title = (text) => h("h1", { id: "page-title", tabindex: "-1" }, text);

export async function accounts(view, { stale }) {
  view.append(title("Accounts"));
  const r = await api("/v1/admin/accounts");
  if (stale()) return;
  const keys = (a) =>
    a.keys.length
      ? h("ul", { class: "plain" }, a.keys.map((k) => h("li", {}, h("code", {}, `${k.prefix}…`), ` ${k.scopes.join(", ")}`, k.revoked_at ? " (revoked)" : "", k.expires_at ? [" expires ", time(k.expires_at)] : "")))
      : "none";
  view.append(
    table(
      "Accounts",
      [
        ["Id", (a) => h("code", {}, a.id)],
        ["Name", (a) => a.name],
        ["Status", (a) => pill(a.status, a.status === "active" ? "ok" : "failed")],
        ["Pool", (a) => a.pool || "default"],
        ["Limits", (a) => [a.messages_per_second ? `${a.messages_per_second}/s` : "", a.messages_per_day ? ` ${a.messages_per_day.toLocaleString()}/day` : ""].join("") || "none"],
        ["API keys", keys],
        ["SMTP users", (a) => a.smtp_users.map((u) => u.username).join(", ") || "none"],
        ["Source", (a) => a.source],
      ],
      r.accounts,
      "No accounts.",
    ),
  );
}

export async function providers(view, { stale }) {
  view.append(title("Providers"));
  let r;
  try {
    r = await api("/v1/admin/providers");
  } catch (e) {
    if (e instanceof ApiError && e.code === "not_enabled") {
      view.append(h("p", {}, "This node does not deliver, so it has no provider state."));
      return;
    }
    throw e;
  }
  if (stale()) return;
  view.append(
    h("p", {}, `As seen by node ${r.node || "?"}; throttles are the cluster's.`),
    table(
      "Providers",
      [
        ["Provider", (p) => p.name],
        ["Matches", (p) => [...(p.mx_suffixes || []), ...(p.domains || [])].slice(0, 6).join(", ")],
        ["Throttles in force", (p) => (p.throttles || []).map((t) => `${t.action} ${t.domain || ""} until ${t.until || "lifted"}`).join("; ") || "none"],
        ["Lanes", (p) => (p.lanes_total ?? (p.lanes || []).length)],
      ],
      r.providers || [],
      "No providers.",
    ),
  );
}

export async function log(view, { stale }) {
  view.append(title("Log lag"));
  const r = await api("/v1/admin/log");
  if (stale()) return;
  view.append(
    table(
      "Consumer lag per group and topic",
      [
        ["Group", (t) => t.group],
        ["Topic", (t) => t.topic],
        ["Partitions", (t) => t.partitions],
        ["Lag", (t) => t.lag.toLocaleString()],
        ["Largest partition lag", (t) => t.max_partition_lag.toLocaleString()],
        ["Records", (t) => t.end.toLocaleString()],
      ],
      r.topics,
      "No consumer groups.",
    ),
  );
}
