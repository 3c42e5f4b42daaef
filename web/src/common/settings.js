// Settings that survive a reload, and the server the pages talk to.
//
// The server URL defaults to the page's own origin; `?server=` or the settings field points
// the page at another origin (the orchestrator allows it through CORS), and is remembered.

const PREFIX = "brain.";

function storage(kind) {
  try {
    const s = kind === "session" ? globalThis.sessionStorage : globalThis.localStorage;
    // Some privacy modes expose storage that throws on write.
    s.setItem(`${PREFIX}probe`, "1");
    s.removeItem(`${PREFIX}probe`);
    return s;
  } catch {
    return null;
  }
}

export function load(key, fallback, kind = "local") {
  const value = storage(kind)?.getItem(PREFIX + key);
  return value === null || value === undefined ? fallback : value;
}

export function save(key, value, kind = "local") {
  const s = storage(kind);
  if (!s) return;
  if (value === null || value === undefined || value === "") s.removeItem(PREFIX + key);
  else s.setItem(PREFIX + key, String(value));
}

/**
 * Normalises what a person typed as a server address: adds http(s)://, drops a trailing
 * path and slash. Returns null when it is not a URL.
 */
export function normaliseServerUrl(input, pageProtocol = "http:") {
  let text = String(input ?? "").trim();
  if (!text) return null;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) text = `${pageProtocol === "https:" ? "https" : "http"}://${text}`;
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  return url.origin;
}

/**
 * The server to use: `?server=` (stored for next time), else the stored one, else the
 * page's origin (or localhost:3000 when the page is a file).
 */
export function resolveServerUrl(location = globalThis.location) {
  const param = new URL(location.href).searchParams.get("server");
  const fromParam = normaliseServerUrl(param, location.protocol);
  if (fromParam) {
    save("server", fromParam);
    return fromParam;
  }
  const stored = normaliseServerUrl(load("server", ""), location.protocol);
  if (stored) return stored;
  return location.protocol === "http:" || location.protocol === "https:" ? location.origin : "http://localhost:3000";
}
