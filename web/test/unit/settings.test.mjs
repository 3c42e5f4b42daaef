// The policy behind item 11 of issue #12: a server named by a link is only proposed, never
// used or remembered before the person confirms it, and the dashboard's API token belongs to
// the one server origin it was entered for.

import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import {
  serverChoice, confirmServer, pageServer, withoutServerParam, apiTokenKey, loadApiToken, saveApiToken, load, save,
} from "../../src/common/settings.js";

/** Web Storage over a Map, as the browser's localStorage/sessionStorage behave. */
class MemoryStorage {
  #m = new Map();
  getItem(k) {
    return this.#m.has(k) ? this.#m.get(k) : null;
  }
  setItem(k, v) {
    this.#m.set(k, String(v));
  }
  removeItem(k) {
    this.#m.delete(k);
  }
  keys() {
    return [...this.#m.keys()];
  }
}

const loc = (href) => {
  const u = new URL(href);
  return { href, protocol: u.protocol, origin: u.origin };
};
const PAGE = "https://brain.example.org";
const EVIL = "https://evil.example";

beforeEach(() => {
  globalThis.localStorage = new MemoryStorage();
  globalThis.sessionStorage = new MemoryStorage();
});

test("without ?server= the page uses its own origin, and asks nothing", () => {
  assert.deepEqual(serverChoice(loc(`${PAGE}/dashboard`)), { current: PAGE, proposed: null, invalid: false, page: PAGE });
  assert.equal(serverChoice(loc("file:///tmp/index.html")).current, "http://localhost:3000");
  assert.equal(pageServer(loc("http://localhost:8080/x")), "http://localhost:8080");
});

test("?server= is only proposed: not used, not stored", () => {
  const c = serverChoice(loc(`${PAGE}/dashboard?server=${encodeURIComponent(`${EVIL}/path`)}`));
  assert.equal(c.current, PAGE);
  assert.equal(c.proposed, EVIL);
  assert.deepEqual(localStorage.keys(), [], "nothing is remembered before the person answers");
  // Asked again on the next visit: declining (or ignoring) the prompt leaves no trace.
  assert.equal(serverChoice(loc(`${PAGE}/?server=evil.example`)).proposed, "https://evil.example");
  assert.equal(serverChoice(loc(`${PAGE}/`)).current, PAGE);
});

test("a confirmed server is used by both pages afterwards; the link to it asks nothing", () => {
  assert.equal(confirmServer(`${EVIL}/`, loc(`${PAGE}/`)), EVIL);
  assert.deepEqual(serverChoice(loc(`${PAGE}/dashboard`)), { current: EVIL, proposed: null, invalid: false, page: PAGE });
  assert.equal(serverChoice(loc(`${PAGE}/?server=${encodeURIComponent(EVIL)}`)).proposed, null);
  // A link back to the page's own server is a proposal too: the person chose the other one.
  assert.equal(serverChoice(loc(`${PAGE}/?server=${encodeURIComponent(PAGE)}`)).proposed, PAGE);
  // Choosing the page's own server stores nothing: it is the default.
  confirmServer(PAGE, loc(`${PAGE}/`));
  assert.equal(serverChoice(loc(`${PAGE}/`)).current, PAGE);
  assert.equal(load("server-confirmed", null), null);
  assert.throws(() => confirmServer("javascript:alert(1)", loc(`${PAGE}/`)));
});

test("a server that an old version stored without asking is dropped, not trusted", () => {
  save("server", EVIL);
  const c = serverChoice(loc(`${PAGE}/dashboard`));
  assert.equal(c.current, PAGE);
  assert.equal(load("server", null), null);
});

test("an address that is not http(s) is neither used nor proposed", () => {
  for (const bad of ["javascript:alert(1)", "ftp://x", "data:text/html,hi", "http://"]) {
    const c = serverChoice(loc(`${PAGE}/?server=${encodeURIComponent(bad)}`));
    assert.deepEqual([c.current, c.proposed, c.invalid], [PAGE, null, true], bad);
  }
});

test("proposals are origins: credentials and paths are cut, hosts in ASCII form", () => {
  const c = serverChoice(loc(`${PAGE}/?server=${encodeURIComponent("https://user:pw@bräin.example:8443/a?b#c")}`));
  assert.equal(c.proposed, "https://xn--brin-moa.example:8443");
});

test("the page address loses ?server= once answered, and keeps the rest", () => {
  assert.equal(withoutServerParam(`${PAGE}/dashboard?x=1&server=${encodeURIComponent(EVIL)}#h`), `${PAGE}/dashboard?x=1#h`);
  assert.equal(withoutServerParam(`${PAGE}/?server=a`), `${PAGE}/`);
});

test("the API token belongs to the origin it was entered for", () => {
  saveApiToken(`${PAGE}/`, "real-token");
  assert.equal(loadApiToken(PAGE), "real-token");
  assert.equal(loadApiToken(`${PAGE}/api/jobs`), "real-token", "the same origin, however written");
  assert.equal(loadApiToken(EVIL), "", "another server gets no token");
  assert.equal(loadApiToken("http://brain.example.org"), "", "nor does the same host over http");
  assert.equal(loadApiToken("https://brain.example.org:8443"), "", "nor another port");
  saveApiToken(EVIL, "evil-token");
  assert.equal(loadApiToken(PAGE), "real-token", "a token entered for another server replaces nothing");
  saveApiToken(PAGE, "");
  assert.equal(loadApiToken(PAGE), "");
  assert.equal(loadApiToken(EVIL), "evil-token");
  assert.equal(apiTokenKey(`${PAGE}/x`), `api-token@${PAGE}`);
  assert.throws(() => apiTokenKey("not a url at all"));
  assert.deepEqual(localStorage.keys(), [], "tokens live in the tab's sessionStorage only");
});

test("the old token, kept for whichever server the page used, is dropped", () => {
  save("api-token", "real-token", "session");
  assert.equal(loadApiToken(EVIL), "");
  assert.equal(load("api-token", null, "session"), null);
});

test("the dashboard's Api sends a server only that server's token, and never follows a redirect with it", async () => {
  const { Api, ApiError } = await import("../../src/dashboard/api.js");
  const sent = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url, init) => {
    sent.push({ url, auth: init.headers.Authorization ?? null, redirect: init.redirect });
    return new Response(JSON.stringify({ error: "token required" }), { status: 401 });
  };
  try {
    new Api(PAGE).token = "real-token";
    const evil = new Api(EVIL);
    await assert.rejects(evil.submit(new FormData()), (e) => e instanceof ApiError && e.status === 401);
    await assert.rejects(evil.cancel("j1"), ApiError);
    await assert.rejects(new Api(PAGE).cancel("j1"), ApiError);
    assert.deepEqual(sent, [
      { url: `${EVIL}/api/jobs`, auth: null, redirect: "follow" },
      { url: `${EVIL}/api/jobs/j1`, auth: null, redirect: "follow" },
      { url: `${PAGE}/api/jobs/j1`, auth: "Bearer real-token", redirect: "error" },
    ]);
  } finally {
    globalThis.fetch = realFetch;
  }
});
