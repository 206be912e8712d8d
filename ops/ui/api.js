// The only way the dashboard talks to Herald: the public JSON API, with the key the user
// typed (kept in sessionStorage for this tab only) in `Authorization: Bearer`. The key is
// never put in a URL, so it is not in history, logs or Referer headers.

const STORAGE = "herald.key";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get key() {
    return sessionStorage.getItem(STORAGE);
  },
  set key(v) {
    if (v) sessionStorage.setItem(STORAGE, v);
    else sessionStorage.removeItem(STORAGE);
  },
};

/** Calls the API; resolves to the JSON body (or text), rejects with an `ApiError`. */
export async function api(path, { method = "GET", body, key = session.key, text = false } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "network", "Herald could not be reached. Check the connection and try again.");
  }
  if (r.status === 204) return null;
  const raw = await r.text();
  if (r.ok) return text ? raw : raw ? JSON.parse(raw) : null;
  let code = "http_" + r.status;
  let message = `Herald answered ${r.status}.`;
  try {
    const e = JSON.parse(raw).error;
    if (e && e.code) [code, message] = [e.code, e.message];
  } catch {
    /* not our error body: keep the status */
  }
  throw new ApiError(r.status, code, message);
}

/** `path?query` from an object, leaving out empty values. */
export function withQuery(path, query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}
