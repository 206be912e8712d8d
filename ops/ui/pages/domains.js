// Sender domains: the list, and the wizard for one domain: add → the records to publish
// (copy buttons, the zone snippet) → verify → each record's finding in plain words with
// what to do about it → diagnostics (SPF look-ups, the DKIM key, DMARC alignment, PTR).

import { api, ApiError } from "../api.js";
import { h, field, pill, time, table, copyButton, errorBox } from "../dom.js";

const PURPOSE = {
  dkim: "DKIM signing key (CNAME)",
  spf: "SPF: who may send for the domain",
  dmarc: "DMARC policy",
  bounce: "Bounce domain (return path)",
  tracking: "Tracking domain for links",
  bimi: "BIMI logo",
  spf_lookups: "SPF DNS look-ups",
  dkim_key: "DKIM key behind the CNAME",
  dmarc_alignment: "DMARC alignment",
  mx: "Mail for the domain (MX)",
  bounce_mx: "Bounces reach Herald",
  ptr: "Reverse DNS of the sending IP",
};

const RESULT = {
  ok: "correct",
  missing: "not found",
  wrong_value: "wrong value",
  conflict: "conflicting record",
  unreachable: "could not be checked",
};

/** What to do about a finding, beyond the server's sentence (which names the exact value). */
function advice(c, domain) {
  if (c.result === "ok") return null;
  if (c.result === "unreachable")
    return "The domain's DNS servers did not answer. Check its NS delegation at the registrar, then verify again in a few minutes.";
  const a = {
    spf: {
      missing:
        "Add one TXT record at the domain itself. If other services send for this domain, list them in the same record: a domain may have only one.",
      conflict:
        "A domain may publish only one SPF record; with two, receivers fail SPF for every message. Delete them all and publish the one merged record named above; it keeps each service's include (the records in step 2 show it too).",
      wrong_value:
        "Replace the SPF record with the value named above (also in step 2): it keeps what you had, adds Herald's include and keeps `all` last.",
    },
    dkim: {
      missing:
        "Add the CNAME at exactly this name. The selector (the label before ._domainkey) must be the same on both sides. Many DNS hosts append the domain for you: then enter only the host part shown in the records.",
      wrong_value:
        "The CNAME points to another target. Each selector must point to the target with the same selector name (hd1 → hd1.…, hd2 → hd2.…); swapped selectors make every signature fail.",
      conflict:
        "Delete the TXT record at this name and publish the CNAME instead, so that Herald can rotate the key without you.",
    },
    dmarc: {
      missing: `Publish a DMARC record at _dmarc.${domain}. Start with p=none and read the reports; Herald signs with d=${domain} (DKIM aligned) and, with the bounce CNAME, sends from bounce.${domain} (SPF aligned), so you can move to p=quarantine later.`,
      conflict: "Keep exactly one DMARC record: with several, receivers ignore all of them.",
      wrong_value: "Fix the p= tag: none, quarantine or reject.",
    },
    bounce: {
      missing: `Optional but recommended: it brings bounces back to Herald and makes SPF align with ${domain} for DMARC.`,
      conflict: "Replace the address records at this name with the CNAME.",
      wrong_value: "Point the CNAME at the target shown in the records.",
    },
    tracking: {
      missing: "Optional: tracked links then use your own name instead of Herald's.",
      conflict: "Replace the address records at this name with the CNAME.",
      wrong_value: "Point the CNAME at the target shown in the records.",
    },
    dmarc_alignment: {
      wrong_value: `For DMARC to pass, the DKIM d= domain or the return-path domain must match ${domain}: publish the DKIM CNAMEs (and the bounce CNAME).`,
    },
    spf_lookups: {
      wrong_value: "SPF allows at most 10 DNS look-ups: remove includes of services you no longer use, or replace some with ip4:/ip6: ranges.",
    },
  };
  return (a[c.record] && a[c.record][c.result]) || null;
}

/** The host part of `name` under `domain` ("@" for the domain itself). */
function host(name, domain) {
  const n = name.replace(/\.$/, "");
  if (n === domain) return "@";
  return n.endsWith("." + domain) ? n.slice(0, -domain.length - 1) : n;
}

function findings(checks, domain, caption) {
  return h(
    "ul",
    { class: "findings", "aria-label": caption },
    checks.map((c) =>
      h(
        "li",
        { class: `finding r-${c.result}`, dataset: { record: c.record, result: c.result } },
        h("h4", {}, PURPOSE[c.record] || c.record, " ", pill(RESULT[c.result] || c.result, c.result), c.required === false ? h("small", {}, " (optional)") : null),
        h("p", { class: "name" }, h("code", {}, c.name)),
        h("p", {}, c.message),
        advice(c, domain) ? h("p", { class: "advice" }, h("strong", {}, "What to do: "), advice(c, domain)) : null,
        c.found && c.found.length && c.result !== "ok"
          ? h("p", { class: "found" }, "Found: ", c.found.map((f, i) => [i ? ", " : "", h("code", {}, f)]))
          : null,
      ),
    ),
  );
}

async function list(view) {
  view.append(h("h1", { id: "page-title", tabindex: "-1" }, "Sender domains"));
  const input = h("input", { type: "text", required: true, placeholder: "example.com", spellcheck: "false", autocomplete: "off" });
  const rua = h("input", { type: "email", placeholder: "dmarc@example.com", autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert" });
  const add = async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const body = { domain: input.value.trim() };
    if (rua.value.trim()) body.dmarc_rua = "mailto:" + rua.value.trim();
    try {
      const d = await api("/v1/domains", { method: "POST", body });
      location.hash = `#/domains/${encodeURIComponent(d.domain)}`;
    } catch (e) {
      if (!(e instanceof ApiError) || e.status === 401) throw e;
      error.textContent = e.message;
      input.focus();
    }
  };
  view.append(
    h(
      "form",
      { class: "card", "aria-labelledby": "add-title", onsubmit: add },
      h("h2", { id: "add-title" }, "Add a domain"),
      h("p", {}, "Step 1 of 3. The domain in your From addresses; Herald then lists the DNS records to publish."),
      field("domain-name", "Domain", input),
      field("domain-rua", "DMARC reports to (optional)", rua),
      h("button", { type: "submit" }, "Add domain"),
      error,
    ),
  );
  const r = await api("/v1/domains");
  view.append(
    h("h2", {}, "Your domains"),
    table(
      "Sender domains",
      [
        ["Domain", (d) => h("a", { href: `#/domains/${encodeURIComponent(d.domain)}` }, d.unicode || d.domain)],
        ["Status", (d) => pill(d.status)],
        ["Last checked", (d) => time(d.checked_at)],
      ],
      r.domains,
      "No sender domains yet: add one above.",
    ),
  );
}

function recordsStep(recs, zone, domain) {
  return h(
    "section",
    { class: "card", "aria-labelledby": "step-records" },
    h("h2", { id: "step-records" }, "Step 2 of 3: publish these records"),
    h("p", {}, "Add them at your DNS host. The Host column is the name without the domain, for hosts that append it."),
    table(
      `DNS records for ${domain}`,
      [
        ["Purpose", (r) => [PURPOSE[r.purpose] || r.purpose, r.required ? null : h("small", {}, " (optional)")]],
        ["Type", (r) => r.type],
        ["Host", (r) => [h("code", { class: "host" }, host(r.name, domain)), " ", copyButton(host(r.name, domain), `Copy the host of the ${r.purpose} record`)]],
        ["Value", (r) => [h("code", { class: "value" }, r.value), " ", copyButton(r.value, `Copy the value of the ${r.purpose} record`)]],
        ["Note", (r) => r.note || ""],
      ],
      recs.records,
    ),
    h(
      "details",
      {},
      h("summary", {}, "Zone file snippet (BIND)"),
      h("pre", { id: "zone-snippet", tabindex: "0" }, zone),
      copyButton(zone, "Copy the zone snippet"),
    ),
  );
}

async function wizard(view, name) {
  let d;
  try {
    d = await api(`/v1/domains/${encodeURIComponent(name)}`);
  } catch (e) {
    if (e instanceof ApiError && e.code === "domain_not_found") {
      view.append(h("h1", { id: "page-title", tabindex: "-1" }, name), errorBox(`${name} is not one of your sender domains.`));
      return;
    }
    throw e;
  }
  const domain = d.domain;
  const load = () =>
    Promise.all([
      api(`/v1/domains/${encodeURIComponent(domain)}/records`),
      api(`/v1/domains/${encodeURIComponent(domain)}/records?format=zone`, { text: true }),
    ]);
  const [recs, zone] = await load();
  let records = recordsStep(recs, zone, domain);
  const status = h("span", { id: "domain-status" }, pill(d.status));
  const results = h("div", { id: "verify-results", "aria-live": "polite" });
  const diag = h("div", { id: "diagnostics", "aria-live": "polite" });
  const show = (v) => {
    status.replaceChildren(pill(v.status));
    const summary =
      v.status === "verified"
        ? h("p", { class: "ok" }, `${v.unicode || v.domain} is verified: Herald signs its mail now.`)
        : h("p", { class: "warn" }, "Not verified yet. Fix what is listed below, then verify again; DNS changes can take a few minutes to be visible.");
    results.replaceChildren(summary, v.checks && v.checks.length ? findings(v.checks, domain, "Findings") : h("p", {}, "Not checked yet."));
  };
  const verifyButton = h("button", { type: "button", id: "verify" }, "Verify DNS now");
  verifyButton.addEventListener("click", async () => {
    verifyButton.disabled = true;
    verifyButton.textContent = "Checking…";
    try {
      show(await api(`/v1/domains/${encodeURIComponent(domain)}/verify`, { method: "POST", body: {} }));
      // The SPF record to publish merges with what the check found.
      const fresh = recordsStep(...(await load()), domain);
      records.replaceWith(fresh);
      records = fresh;
    } catch (e) {
      results.replaceChildren(errorBox(e.message));
    } finally {
      verifyButton.disabled = false;
      verifyButton.textContent = "Verify DNS now";
    }
  });
  const diagButton = h("button", { type: "button", id: "diagnose" }, "Run diagnostics");
  diagButton.addEventListener("click", async () => {
    diagButton.disabled = true;
    try {
      const c = await api(`/v1/domains/${encodeURIComponent(domain)}/check`);
      diag.replaceChildren(
        h("p", { class: c.ok ? "ok" : "warn" }, c.ok ? "Everything checks out." : "Some checks need attention."),
        findings(c.checks, domain, "Diagnostics"),
      );
    } catch (e) {
      diag.replaceChildren(errorBox(e.message));
    } finally {
      diagButton.disabled = false;
    }
  });
  view.append(
    h("p", {}, h("a", { href: "#/domains" }, "← All domains")),
    h("h1", { id: "page-title", tabindex: "-1" }, d.unicode || domain, " ", status),
    h("p", {}, "Step 1 of 3 done: added ", time(d.added_at), "."),
    records,
    h(
      "section",
      { class: "card", "aria-labelledby": "step-verify" },
      h("h2", { id: "step-verify" }, "Step 3 of 3: verify"),
      h("p", {}, "Herald looks the records up now, without cache, and says what it found."),
      verifyButton,
      results,
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "step-diag" },
      h("h2", { id: "step-diag" }, "Diagnostics"),
      h("p", {}, "SPF look-up count, the DKIM key behind the CNAME, DMARC alignment, MX and reverse DNS."),
      diagButton,
      diag,
    ),
  );
  if (d.checks && d.checks.length) show(d);
}

export async function render(view, { rest }) {
  return rest[0] ? wizard(view, rest[0]) : list(view);
}
