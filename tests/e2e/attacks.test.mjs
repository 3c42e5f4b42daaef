// The attacks of docs/security.md ("Attacks and their defences"), each mounted against the
// real server with the official socket.io-client; every test asserts that the defence holds.
// Sections are numbered as in docs/security.md. Bounds on memory or time are loose enough
// that they cannot flake (e.g. the server's RSS read from /proc), never timing assertions.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as h from "./helpers.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- 1. Job killing -------------------------------------------------------------------------



// ---- 2. Task amplification ------------------------------------------------------------------



// ---- 3. Memory amplification in JSON --------------------------------------------------------



// ---- 4. A hostile page enlists its visitors -------------------------------------------------

/** Connects with `opts` and resolves with "connected" or the refusal's message. */
function outcome4(url, opts = {}) {
  const socket = h.connect(url, opts);
  const settled = new Promise((res) => {
    socket.once("connect", () => res("connected"));
    socket.once("connect_error", (e) => res(`refused: ${e.message}`));
  });
  return { socket, settled };
}

/** Connects with `opts`, registers, and resolves with the registration's acknowledgement. */
async function register4(t, url, opts) {
  const socket = h.connect(url, opts);
  t.after(() => socket.close());
  await h.once(socket, "connect");
  const ack = h.once(socket, "registration_ack");
  socket.emit("register_worker", { name: "page" });
  return ack;
}

test("4. a page from a foreign origin is refused with a reason; the allowed page and programs without an origin work", async (t) => {
  const server = await h.startServer(t, { env: { ALLOWED_ORIGINS: "https://brain.example" } });
  // The hostile page's visitors: their browsers send the hostile page's origin, over
  // websocket (as the volunteer page) and over long-polling (socket.io's default).
  for (const transports of [["websocket"], ["polling"]]) {
    const evil = outcome4(server.url, { transports, extraHeaders: { origin: "https://evil.example" } });
    t.after(() => evil.socket.close());
    assert.equal(await evil.settled, "refused: origin https://evil.example is not allowed", transports[0]);
    evil.socket.emit("register_worker", { name: "enlisted" }); // dropped: not connected
  }
  // The volunteer page of the allowed origin, and the CLI or a Node worker (no Origin).
  const page = await register4(t, server.url, { extraHeaders: { origin: "https://brain.example" } });
  const program = await register4(t, server.url, {});
  assert.ok(page.worker_id && program.worker_id);
  await sleep(200);
  const names = (await h.api(server.url, "/api/workers")).json.map((w) => w.name);
  assert.equal(names.length, 2, `only the allowed page and the program are workers: ${names}`);
});

test("4. with ALLOWED_ORIGINS=* any page may still connect (the default, as documented)", async (t) => {
  const server = await h.startServer(t);
  const ack = await register4(t, server.url, { extraHeaders: { origin: "https://anywhere.example" } });
  assert.ok(ack.worker_id);
});

// ---- 5. Forged addresses --------------------------------------------------------------------

/** Opens a raw Engine.IO session over long-polling (no Socket.io CONNECT); resolves with the
 * HTTP status and, when opened, the session id. */
async function handshake5(url, headers = {}) {
  const res = await fetch(`${url}/socket.io/?EIO=4&transport=polling`, { headers });
  const text = await res.text();
  const sid = res.status === 200 ? JSON.parse(text.slice(1)).sid : undefined;
  return { status: res.status, text, sid };
}

test("5. forged left-most X-Forwarded-For hops all count as the address the proxy appended", async (t) => {
  const server = await h.startServer(t, { env: { TRUST_PROXY: "true", MAX_CONNECTIONS_PER_IP: "3" } });
  // Each client writes its own, different X-Forwarded-For; the proxy (played here) appends
  // the address it saw, the same for all of them: 203.0.113.7.
  const as = (forged, real) => ({ extraHeaders: { "x-forwarded-for": `${forged}, ${real}` } });
  // One after the other, so that the one past the limit is the last.
  const inOrder = async (optsList) => {
    const outcomes = [];
    for (const opts of optsList) {
      const client = outcome4(server.url, opts);
      t.after(() => client.socket.close());
      outcomes.push(await client.settled);
    }
    return outcomes;
  };
  const forged = await inOrder([0, 1, 2, 3].map((i) => as(`10.${i}.0.1`, "203.0.113.7")));
  assert.deepEqual(forged, [
    "connected",
    "connected",
    "connected",
    "refused: more than 3 connections from one address",
  ]);

  // IPv6: every address of one /64 is one client; another /64 is another.
  const v6 = await inOrder([1, 2, 3, 4].map((i) => as("10.0.0.1", `2001:db8:1:2::${i.toString(16)}:${i}`)));
  assert.deepEqual(v6.slice(0, 3), ["connected", "connected", "connected"]);
  assert.match(v6[3], /more than 3 connections/);

  // A victim behind another address is not used up by the forgers, whatever they wrote.
  const victim = outcome4(server.url, as("203.0.113.7", "198.51.100.20"));
  t.after(() => victim.socket.close());
  assert.equal(await victim.settled, "connected");
  const other64 = outcome4(server.url, as("10.0.0.1", "2001:db8:1:3::1"));
  t.after(() => other64.socket.close());
  assert.equal(await other64.settled, "connected");

  // Malformed hops in the trusted place do not let a client pick its address either: they
  // all count as the TCP peer (the proxy, here 127.0.0.1), whatever is written left of them.
  const malformed = ["unknown", "garbage 1", "[2001:db8::1", "1.2.3.4%eth0"];
  const garbage = await inOrder(malformed.map((bad, i) => as(`10.7.${i}.1`, bad)));
  assert.deepEqual(garbage.slice(0, 3), ["connected", "connected", "connected"]);
  assert.match(garbage[3], /more than 3 connections/);
});

/** Opens a raw Engine.IO session over websocket (no Socket.io CONNECT); resolves with the
 * status (101 when opened) and the socket. */
async function wsSession5(url, headers = {}) {
  const { WebSocket } = await import("ws");
  return new Promise((res) => {
    const ws = new WebSocket(`${url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`, { headers });
    ws.once("message", (m) => res({ status: String(m).startsWith("0") ? 101 : -1, ws }));
    ws.once("unexpected-response", (req, r) => {
      res({ status: r.statusCode });
      req.destroy();
    });
    ws.once("error", () => res({ status: 0 }));
  });
}

test("5. raw Engine.IO sessions that never connect to Socket.io are limited from the handshake on", async (t) => {
  const server = await h.startServer(t, { env: { TRUST_PROXY: "true", MAX_CONNECTIONS_PER_IP: "3" } });
  const from = (i) => ({ "x-forwarded-for": `10.9.${i}.1, 198.51.100.9` });
  // Sessions may be twice the connection limit (6), and no more, whatever the forged hops:
  // three over long-polling, three over websocket, none of them ever sends CONNECT.
  const polling = [];
  for (let i = 0; i < 3; i++) polling.push(await handshake5(server.url, from(i)));
  const sockets = [];
  for (let i = 3; i < 6; i++) sockets.push(await wsSession5(server.url, from(i)));
  t.after(() => sockets.forEach((s) => s.ws?.terminate()));
  assert.deepEqual([...polling, ...sockets].map((o) => o.status), [200, 200, 200, 101, 101, 101]);
  const refused = [];
  for (let i = 6; i < 26; i++) {
    const o = i % 2 ? await handshake5(server.url, from(i)) : await wsSession5(server.url, from(i));
    refused.push(o.status);
    o.ws?.terminate();
  }
  assert.deepEqual([...new Set(refused)], [429], "20 more handshakes, half of each transport, are all refused");
  const body = await handshake5(server.url, from(99));
  assert.match(JSON.parse(body.text).error, /more than 6 Socket.io sessions/);

  // A real client from that address cannot get in either; one from elsewhere can.
  const blocked = outcome4(server.url, { extraHeaders: from(100) });
  t.after(() => blocked.socket.close());
  assert.notEqual(await blocked.settled, "connected");
  const elsewhere = outcome4(server.url, { extraHeaders: { "x-forwarded-for": "198.51.100.10" } });
  t.after(() => elsewhere.socket.close());
  assert.equal(await elsewhere.settled, "connected");

  // A websocket session gives its place back as soon as its connection closes.
  for (const s of sockets) s.ws.close();
  let back;
  for (let i = 0; i < 50 && back !== "connected"; i++) {
    const client = outcome4(server.url, { extraHeaders: from(101) });
    t.after(() => client.socket.close());
    back = await client.settled;
    if (back !== "connected") await sleep(100);
  }
  assert.equal(back, "connected", "a place is free once the websocket sessions closed");

  // Long-polling sessions that never connect are closed by the server's connect timeout
  // (10 s), and their places come back: then exactly 5 more sessions fit beside the client.
  let gone;
  for (let i = 0; i < 60 && gone !== 400; i++) {
    const poll = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&sid=${polling[0].sid}`);
    gone = poll.status;
    await poll.text();
    if (gone !== 400) await sleep(500);
  }
  assert.equal(gone, 400, "the server closed the session that never connected");
  let opened = 0;
  for (let i = 0; i < 60 && opened < 5; i++) {
    if ((await handshake5(server.url, from(300 + i))).status === 200) opened++;
    else await sleep(100);
  }
  assert.equal(opened, 5);
  assert.equal((await handshake5(server.url, from(400))).status, 429, "and not one more");
});

// ---- 6. Re-send amplification ---------------------------------------------------------------



// ---- 7. Lease hoarding ----------------------------------------------------------------------



// ---- 8. Tiles that can never be returned ----------------------------------------------------



// ---- 9. Non-finite bounds -------------------------------------------------------------------



// ---- 10. Unbounded metric labels ------------------------------------------------------------



// ---- 12. Stale standing ---------------------------------------------------------------------



// (11, the dashboard handing its token to any server, is a browser test: web/test/e2e/.)
