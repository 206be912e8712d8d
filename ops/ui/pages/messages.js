// Messages: search by recipient (`/v1/messages?recipient=`) or open one by id
// (`/v1/messages/{id}`), and the message's story as a timeline of its events.

import { api, ApiError, withQuery } from "../api.js";
import { h, field, pill, time, table, errorBox } from "../dom.js";

const ID = /^[0-9a-f]{32}$/;

const WORDS = {
  "message.accepted": "Accepted",
  "delivery.attempted": "Delivery attempt",
  "bounce.received": "Bounce",
  "complaint.received": "Spam complaint",
  "recipient.suppressed": "Recipient suppressed",
  "message.suppressed": "Not sent: suppressed",
  "message.opened": "Opened",
  "link.clicked": "Clicked",
  "recipient.unsubscribed": "Unsubscribed",
};

function reply(r) {
  return r ? `${r.code}${r.enhanced ? " " + r.enhanced : ""} ${r.text || ""}`.trim() : null;
}

/** The facts of one event worth a line each. */
function facts(e) {
  const out = [];
  const add = (k, v) => v !== undefined && v !== null && v !== "" && out.push([k, String(v)]);
  switch (e.type) {
    case "message.accepted":
      add("From (envelope)", e.envelope_sender);
      add("Size", e.size && `${e.size.toLocaleString()} bytes`);
      break;
    case "delivery.attempted":
      add("Attempt", e.attempt);
      add("Outcome", e.outcome);
      add("Server", e.mx_host && `${e.mx_host}${e.mx_ip ? " (" + e.mx_ip + ")" : ""}${e.tls ? ", TLS" : ""}`);
      add("Reply", reply(e.reply));
      add("DKIM", e.dkim);
      add("Next attempt", e.next_attempt_at);
      add("Took", e.duration_ms !== undefined && `${e.duration_ms} ms`);
      break;
    case "bounce.received":
      add("Type", `${e.bounce_type}, ${e.class} (${e.action}, via ${e.source})`);
      add("Reply", e.code && `${e.code} ${e.enhanced || ""}`);
      add("Diagnostic", e.diagnostic);
      add("Remote server", e.remote_mta);
      break;
    case "complaint.received":
      add("Feedback type", e.feedback_type);
      add("Reported by", e.reporting_mta);
      break;
    case "recipient.suppressed":
    case "message.suppressed":
      add("Reason", e.reason);
      add("Detail", e.detail);
      break;
    default:
      add("URL", e.url);
      add("Machine", e.machine ? `yes (${e.machine_reason})` : null);
      add("User agent", e.user_agent);
  }
  return out;
}

function timeline(m) {
  return h(
    "ol",
    { class: "timeline", "aria-label": "Events" },
    m.events.map((e) =>
      h(
        "li",
        { class: e.outcome || "" },
        h("div", { class: "when" }, time(e.at)),
        h("div", { class: "what" }, h("strong", {}, WORDS[e.type] || e.type), e.outcome ? [" ", pill(e.outcome)] : null),
        h("dl", { class: "facts" }, facts(e).map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
      ),
    ),
  );
}

function searchForm(value) {
  const input = h("input", { type: "search", value: value || "", required: true, spellcheck: "false", autocomplete: "off" });
  return h(
    "form",
    {
      class: "inline",
      role: "search",
      onsubmit: (ev) => {
        ev.preventDefault();
        const q = input.value.trim().toLowerCase();
        location.hash = ID.test(q) ? `#/messages/${q}` : withQuery("#/messages", { recipient: input.value.trim() });
      },
    },
    field("message-search", "Recipient address or message id", input),
    h("button", { type: "submit" }, "Find"),
  );
}

async function one(view, id) {
  let m;
  try {
    m = await api(`/v1/messages/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.code === "not_found") {
      view.append(errorBox(`No message ${id} in this account (a message just sent may take a moment to appear).`));
      return;
    }
    throw e;
  }
  view.append(
    h("p", {}, h("a", { href: withQuery("#/messages", { recipient: m.recipient }) }, `← Messages to ${m.recipient}`)),
    h("h2", {}, "Message ", h("code", {}, m.id)),
    h("p", {}, "To ", h("strong", {}, m.recipient), " — ", pill(m.status)),
    timeline(m),
  );
}

export async function render(view, { rest, params, stale }) {
  const recipient = params.get("recipient");
  view.append(h("h1", { id: "page-title", tabindex: "-1" }, "Messages"), searchForm(rest[0] || recipient));
  if (rest[0]) return one(view, rest[0]);
  if (!recipient) {
    view.append(h("p", {}, "Find the messages sent to an address, newest first, or open one by its id."));
    return;
  }
  const r = await api(withQuery("/v1/messages", { recipient, before: params.get("before"), limit: 20 }));
  if (stale()) return;
  const accepted = (m) => m.events[0] && m.events[0].at;
  view.append(
    table(
      `Messages to ${recipient}`,
      [
        ["Message", (m) => h("a", { href: `#/messages/${m.id}` }, m.id)],
        ["Status", (m) => pill(m.status)],
        ["Accepted", (m) => time(accepted(m))],
        ["Events", (m) => m.events.length],
      ],
      r.messages,
      `No messages to ${recipient}.`,
    ),
    r.next ? h("p", {}, h("a", { href: withQuery("#/messages", { recipient, before: r.next }) }, "Older messages")) : null,
  );
}
