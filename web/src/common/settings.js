// Settings that survive a reload, and the server the pages talk to.
//
// The server defaults to the page's own origin. A link may propose another one with
// `?server=`, but a link is written by whoever sent it: the page uses a proposed server only
// after the person confirms it on the page (see server-prompt.js), and only then remembers
// it. Until then nothing is sent to it. The dashboard's API token is kept per server origin,
// so it can only ever go to the server it was entered for.

const PREFIX = "brain.";

/**
 * The confirmed server. Named apart from the old `server` key, which a link could fill
 * without asking: a value found there may have been planted, so it is dropped, not trusted.
 */
const SERVER_KEY = "server-confirmed";
const LEGACY_SERVER_KEY = "server";
/** The old dashboard token, kept for whichever server the page happened to use: dropped. */
const LEGACY_TOKEN_KEY = "api-token";

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
 * path and slash. Returns the origin (scheme, host in ASCII form, port), or null when it is
 * not an http(s) URL. Credentials in the address (`http://user:pw@host`) are dropped too.
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

/** The page's own server: its origin, or localhost:3000 when the page is opened as a file. */
export function pageServer(location = globalThis.location) {
  return location.protocol === "http:" || location.protocol === "https:" ? location.origin : "http://localhost:3000";
}

/**
 * Which server the page talks to now, and which other one the link proposes.
 *
 * - `current`: the server the person confirmed earlier (on either page), else the page's own.
 * - `proposed`: the origin named by `?server=` when it differs from `current`, else null.
 *   The page must not send anything to it before `confirmServer(proposed)`.
 * - `invalid`: `?server=` was given but is not an http(s) address (the page says so).
 */
export function serverChoice(location = globalThis.location) {
  save(LEGACY_SERVER_KEY, "");
  const page = pageServer(location);
  const stored = normaliseServerUrl(load(SERVER_KEY, ""), location.protocol);
  const current = stored ?? page;
  const param = new URL(location.href).searchParams.get("server");
  const asked = param === null ? null : normaliseServerUrl(param, location.protocol);
  return { current, proposed: asked && asked !== current ? asked : null, invalid: param !== null && !asked, page };
}

/**
 * Records that the person chose `server` (confirmed a link's proposal, or typed it): both
 * pages use it from now on. The page's own server is the default and is not stored.
 */
export function confirmServer(server, location = globalThis.location) {
  const origin = normaliseServerUrl(server, location.protocol);
  if (!origin) throw new Error(`not an http(s) address: ${server}`);
  save(SERVER_KEY, origin === pageServer(location) ? "" : origin);
  return origin;
}

/** The page's address without `?server=`: once answered, a reload does not ask again. */
export function withoutServerParam(href) {
  const url = new URL(href);
  url.searchParams.delete("server");
  return url.href;
}

/** The sessionStorage key of the dashboard's API token for one server origin. */
export function apiTokenKey(server) {
  const origin = normaliseServerUrl(server);
  if (!origin) throw new Error(`not an http(s) address: ${server}`);
  return `api-token@${origin}`;
}

/** The API token entered for `server` in this tab, or "" when none was. */
export function loadApiToken(server) {
  save(LEGACY_TOKEN_KEY, "", "session");
  return load(apiTokenKey(server), "", "session");
}

/** Keeps `token` for `server` only, for this tab; an empty token forgets it. */
export function saveApiToken(server, token) {
  save(LEGACY_TOKEN_KEY, "", "session");
  save(apiTokenKey(server), token, "session");
}
