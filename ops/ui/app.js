// The dashboard's shell: sign-in, navigation and hash routes (`#/stats?from=…`). Each page
// is a module under `pages/` exporting `render(view, params)`; pages only use the public
// API (`api.js`), with the key the user typed.

import { api, ApiError, session } from "./api.js";
import { h, replace, errorBox } from "./dom.js";
import * as domains from "./pages/domains.js";
import * as stats from "./pages/stats.js";
import * as messages from "./pages/messages.js";
import * as suppressions from "./pages/suppressions.js";
import * as webhooks from "./pages/webhooks.js";
import * as operator from "./pages/operator.js";

const CUSTOMER = [
  ["domains", "Sender domains", domains.render],
  ["stats", "Statistics", stats.render],
  ["messages", "Messages", messages.render],
  ["suppressions", "Suppressions", suppressions.render],
  ["webhooks", "Webhooks", webhooks.render],
];
const OPERATOR = [
  ["accounts", "Accounts", operator.accounts],
  ["providers", "Providers", operator.providers],
  ["log", "Log lag", operator.log],
];
const ROLE = "herald.role";
const NAME = "herald.name";

const $ = (id) => document.getElementById(id);

function routes() {
  return sessionStorage.getItem(ROLE) === "operator" ? OPERATOR : CUSTOMER;
}

/** The current route: `#/name/rest?query` → {name, rest, params}. */
function current() {
  const hash = location.hash.startsWith("#/") ? location.hash.slice(2) : "";
  const [path, query = ""] = hash.split("?");
  const [name, ...rest] = path.split("/");
  return { name, rest: rest.map(decodeURIComponent), params: new URLSearchParams(query) };
}

function showSignIn(message) {
  $("nav").hidden = true;
  $("who").hidden = true;
  replace($("page"));
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  $("key").value = "";
  $("key").focus();
}

function signOut(message) {
  session.key = null;
  sessionStorage.removeItem(ROLE);
  sessionStorage.removeItem(NAME);
  if (location.hash) history.replaceState(null, "", location.pathname);
  showSignIn(message);
}

/** What a refused key means, in words. */
function refusal(e) {
  switch (e.code) {
    case "unauthorized":
      return `Herald does not know this key: ${e.message}. Check that you pasted all of it; a revoked key or a deleted account's key no longer works.`;
    case "key_expired":
      return "This API key has expired. Ask for a new one (or issue one with an operator key).";
    case "network":
      return e.message;
    default:
      return `The key was refused: ${e.message} (${e.code}).`;
  }
}

/** Finds out whose key it is: an account's (`/v1/account`) or an operator's. */
async function identify(key) {
  try {
    const a = await api("/v1/account", { key });
    return { role: "customer", name: a.name || a.id };
  } catch (e) {
    if (!(e instanceof ApiError) || e.code !== "operator_key") throw e;
    await api("/v1/admin/accounts", { key });
    return { role: "operator", name: "operator" };
  }
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  const button = event.target.querySelector("button");
  button.disabled = true;
  $("sign-in-error").textContent = "";
  try {
    const who = await identify(key);
    session.key = key;
    sessionStorage.setItem(ROLE, who.role);
    sessionStorage.setItem(NAME, who.name);
    $("key").value = "";
    $("sign-in").hidden = true;
    location.hash = `#/${routes()[0][0]}`;
    route();
  } catch (e) {
    $("sign-in-error").textContent = refusal(e);
    $("key").focus();
  } finally {
    button.disabled = false;
  }
}

function nav(active) {
  const list = h(
    "ul",
    {},
    routes().map(([name, label]) =>
      h("li", {}, h("a", { href: `#/${name}`, "aria-current": name === active ? "page" : null }, label)),
    ),
  );
  replace($("nav"), list);
  $("nav").hidden = false;
  $("who-name").textContent = sessionStorage.getItem(NAME) || "";
  $("who").hidden = false;
}

let generation = 0;

/** Renders the page of the current hash; a page that loses its key sends the user to sign in. */
async function route() {
  if (!session.key) return showSignIn();
  $("sign-in").hidden = true;
  const { name, rest, params } = current();
  const all = routes();
  const found = all.find(([n]) => n === name);
  if (!found) {
    history.replaceState(null, "", `#/${all[0][0]}`);
    return route();
  }
  nav(name);
  const view = h("section", { class: "view", "aria-labelledby": "page-title" });
  replace($("page"), view);
  const mine = ++generation;
  try {
    await found[2](view, { rest, params, stale: () => mine !== generation });
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.code === "operator_key")) {
      return signOut(refusal(e));
    }
    if (mine === generation) view.append(errorBox(e.message || String(e)));
  }
  const title = view.querySelector("h1");
  if (title && mine === generation) title.focus({ preventScroll: true });
}

function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => {
    if (location.hash === "" || location.hash.startsWith("#/")) route();
  });
  route();
}

start();
