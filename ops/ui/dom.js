// Building DOM nodes without HTML strings: every value from the API is set as text or as
// an attribute, never parsed as markup, so nothing the API returns can run as script.

/** `h("p", {class: "x"}, "text", child)`: an element; `on*` attributes take functions. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** A table: `columns` are `[heading, row => cell]`. */
export function table(caption, columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map(([name]) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(r) ?? ""))))),
  );
}

/** A copy button for `text`; says "Copied" for a moment (or how to copy when the page cannot). */
export function copyButton(text, label) {
  const b = h("button", { type: "button", class: "copy", "aria-label": label }, "Copy");
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = "Copied";
    } catch {
      b.textContent = "Select and copy";
    }
    setTimeout(() => (b.textContent = "Copy"), 2000);
  });
  return b;
}

/** An RFC 3339 time as the reader's local time, with the exact value in a tooltip. */
export function time(at) {
  if (!at) return "";
  const d = new Date(at);
  return h("time", { datetime: at, title: at }, isNaN(d) ? at : d.toLocaleString());
}

/** A labelled form field. */
export function field(id, label, input) {
  input.id = id;
  if (!input.name) input.name = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

/** A status pill. */
export function pill(text, kind) {
  return h("span", { class: `pill ${kind || text}` }, text);
}

export function errorBox(message) {
  return h("p", { class: "error", role: "alert" }, message);
}
