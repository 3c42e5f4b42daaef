// The attacks of docs/security.md ("Attacks and their defences"), each mounted against the
// real server with the official socket.io-client; every test asserts that the defence holds.
// Sections are numbered as in docs/security.md. Bounds on memory or time are loose enough
// that they cannot flake (e.g. the server's RSS read from /proc), never timing assertions.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as h from "./helpers.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- 1. Job killing -------------------------------------------------------------------------

test("1. job killing: anonymous failure reports and expired leases never fail a job, and no reporter gets its task back", async (t) => {
  const server = await h.startServer(t, { env: { TRUST_PROXY: "true", LEASE_MS: "300" } });
  const job = await h.submitRandom(server.url, 4, 3, 4, 2); // 4 tiles
  // Twelve fresh identities at twelve addresses report every task they get as failed.
  const killers = [];
  for (let i = 0; i < 12; i++) {
    killers.push(await h.startWorker(t, server.url, {
      name: `killer-${i}`, behaviour: { failAll: "out of memory" }, headers: { "x-forwarded-for": `10.1.0.${i}` },
    }));
  }
  // Eight more take tasks and let their leases expire (no heartbeats), each a fresh identity.
  const hoarders = [];
  for (let i = 0; i < 8; i++) {
    hoarders.push(await h.startWorker(t, server.url, {
      name: `hoarder-${i}`, behaviour: { holdAll: true }, headers: { "x-forwarded-for": `10.2.0.${i}` },
    }));
    await sleep(150);
  }
  // Every killer reports each of the four tasks once, and never sees one again.
  const reports = () => killers.reduce((sum, k) => sum + (k.stats.failed ?? 0), 0);
  for (const end = Date.now() + 20000; reports() < 48; await sleep(50))
    assert.ok(Date.now() < end, `only ${reports()} of 48 reports made`);
  for (const k of killers) assert.equal(new Set(k.stats.tasks).size, k.stats.tasks.length, "a task came back to its reporter");
  const expired = hoarders.reduce((sum, w) => sum + w.stats.assigned, 0);
  t.diagnostic(`${reports()} failure reports from 12 addresses and ${expired} leases left to expire by 8 more`);
  assert.ok(expired >= 8, `${expired} leases held by hoarders`);
  const during = (await h.api(server.url, `/api/jobs/${job.id}`)).json;
  assert.notEqual(during.status, "failed", during.error);
  // An honest volunteer finishes the job, exactly.
  await h.startWorker(t, server.url, { name: "honest", headers: { "x-forwarded-for": "10.3.0.1" } });
  await h.waitForJob(server.url, job.id);
  h.assertClose((await h.downloadNpy(server.url, job.id)).data, job.want, job.k);
});

test("1. job killing: reporting failures costs standing; a client that only drops tasks is quarantined", async (t) => {
  const server = await h.startServer(t);
  await h.submitRandom(server.url, 6, 2, 4, 2); // 6 tiles
  await h.submitRandom(server.url, 6, 2, 4, 2, 7); // 6 more
  const dropper = await h.startWorker(t, server.url, { name: "dropper", behaviour: { failAll: "nope" } });
  for (const end = Date.now() + 15000; !dropper.stats.quarantined; await sleep(50))
    assert.ok(Date.now() < end, `not quarantined after ${dropper.stats.failed} reports`);
  assert.match(dropper.stats.quarantined, /8 tasks reported failed or abandoned against 0 delivered/);
  // Reports already on their way when the eighth was counted arrive after it.
  assert.ok(dropper.stats.failed >= 8 && dropper.stats.failed <= 12, `${dropper.stats.failed} reports`);
  const [record] = (await h.api(server.url, "/api/workers")).json;
  assert.equal(record.reputation.quarantined, true);
});



// ---- 2. Task amplification ------------------------------------------------------------------



// ---- 3. Memory amplification in JSON --------------------------------------------------------



// ---- 4. A hostile page enlists its visitors -------------------------------------------------



// ---- 5. Forged addresses --------------------------------------------------------------------



// ---- 6. Re-send amplification ---------------------------------------------------------------

/** Submits A·B (f32, random) as .npy files: big panels without a big JSON body. */
async function submitNpy(url, m, k, n, tile) {
  const form = new FormData();
  form.append("a", new Blob([h.npyEncode("f32", m, k, h.randomMatrix(m, k, 3))]), "a.npy");
  form.append("b", new Blob([h.npyEncode("f32", k, n, h.randomMatrix(k, n, 4))]), "b.npy");
  form.append("tile", String(tile));
  const res = await h.api(url, "/api/jobs", { method: "POST", body: form });
  assert.equal(res.status, 201, res.text);
  return res.json;
}

test("6. re-send amplification: a lease is sent again at most twice, and never past the connection's send budget", async (t) => {
  const server = await h.startServer(t, { env: { MAX_EVENTS_PER_SEC: "1000" } });
  await submitNpy(server.url, 128, 1024, 128, 64); // panels of 256 KiB
  const { socket } = await h.registered(t, server.url, { name: "amplifier" });
  let bytes = 0;
  const sent = new Map();
  socket.on("task_assigned", (task) => {
    bytes += (task.a?.length ?? 0) + (task.b?.length ?? 0);
    sent.set(task.task_id, (sent.get(task.task_id) ?? 0) + 1);
  });
  const errors = [];
  socket.on("protocol_error", (e) => errors.push(e.code));
  socket.emit("request_task");
  const task = await h.once(socket, "task_assigned");
  for (let i = 0; i < 200; i++) socket.emit("panel_missing", { task_id: task.task_id });
  for (const end = Date.now() + 10000; !errors.includes("redelivery_limit"); await sleep(20))
    assert.ok(Date.now() < end, `errors: ${errors.slice(0, 5)}`);
  await sleep(300);
  t.diagnostic(`200 panel_missing: task sent ${sent.get(task.task_id)} times, ${bytes} bytes`);
  assert.equal(sent.get(task.task_id), 3, "the first delivery and two re-sends");
  assert.ok(bytes <= 3 * 2 * 256 * 1024, `${bytes} bytes sent`);
  // The lease went back to the queue: a result for it is refused.
  socket.emit("task_result", { task_id: task.task_id, c: new Uint8Array(64 * 64 * 4) });
  const ack = await h.once(socket, "result_ack");
  assert.equal(ack.accepted, false);
});

test("6. re-send amplification: past its send budget a connection waits; nobody else does", async (t) => {
  // 64 KiB/s: the bucket holds 256 KiB, one task's two panels are 512 KiB.
  const server = await h.startServer(t, { env: { MAX_SEND_BYTES_PER_SEC: "65536" } });
  await submitNpy(server.url, 256, 1024, 128, 64); // 8 tiles
  const greedy = await h.registered(t, server.url, { name: "greedy" });
  let tasks = 0;
  const errors = [];
  greedy.socket.on("task_assigned", () => tasks++);
  greedy.socket.on("protocol_error", (e) => errors.push(e.code));
  greedy.socket.emit("request_task");
  greedy.socket.emit("request_task");
  const first = await h.once(greedy.socket, "task_assigned");
  greedy.socket.emit("panel_missing", { task_id: first.task_id });
  await sleep(1500);
  assert.equal(tasks, 1, "the second task waits for the budget to refill");
  assert.ok(errors.includes("send_budget"), `errors: ${errors}`);
  // Another connection is served at once.
  const other = await h.registered(t, server.url, { name: "other" });
  other.socket.emit("request_task");
  await h.once(other.socket, "task_assigned", 5000);
});



// ---- 7. Lease hoarding ----------------------------------------------------------------------

test("7. lease hoarding: a new worker holds two leases until it delivers; one address holds at most its cap", async (t) => {
  const server = await h.startServer(t, { env: { TRUST_PROXY: "true", MAX_LEASES_PER_ADDRESS: "5", LEASE_MS: "60000" } });
  const job = await h.submitRandom(server.url, 16, 2, 16, 2); // 64 tiles
  // A fresh identity asks for sixteen tasks and gets two.
  const greedy = await h.startWorker(t, server.url, { name: "greedy", inFlight: 16, behaviour: { holdAll: true } });
  await sleep(1000);
  assert.equal(greedy.stats.assigned, 2);
  // Sybils from the same address (the TCP peer): together they never pass the cap of five.
  const sybils = [];
  for (let i = 0; i < 6; i++) sybils.push(await h.startWorker(t, server.url, { name: `sybil-${i}`, behaviour: { holdAll: true } }));
  await sleep(1000);
  const held = greedy.stats.assigned + sybils.reduce((sum, s) => sum + s.stats.assigned, 0);
  assert.equal(held, 5, `${held} leases held from one address`);
  // A volunteer elsewhere is served, earns leases as it delivers, and finishes the rest.
  const honest = await h.startWorker(t, server.url, { name: "honest", inFlight: 8, headers: { "x-forwarded-for": "10.4.0.1" } });
  for (const end = Date.now() + 20000; (await h.api(server.url, `/api/jobs/${job.id}`)).json.tasks_done < 59; await sleep(50))
    assert.ok(Date.now() < end, "the honest worker is not served");
  assert.equal(honest.stats.refused, 0);
});

test("7. lease hoarding: stall detection looks at every lease, not the oldest eight", async (t) => {
  const server = await h.startServer(t, { env: { LEASE_MS: "60000", MAX_LEASES_PER_ADDRESS: "1000" } });
  const job = await h.submitRandom(server.url, 8, 2, 8, 2, 5); // 16 tiles
  // Five hangers take ten tiles and never answer.
  const hangers = [];
  for (let i = 0; i < 5; i++) hangers.push(await h.startWorker(t, server.url, { name: `hanger-${i}`, behaviour: { holdAll: true } }));
  for (const end = Date.now() + 10000; hangers.some((w) => w.stats.assigned < 2); await sleep(20)) assert.ok(Date.now() < end);
  // A worker answers the other six (a measured speed, an allowance of eight leases), then takes
  // every copy it is offered and hangs.
  const copyHoarder = await h.startWorker(t, server.url, { name: "copy-hoarder", inFlight: 1, behaviour: { holdAfter: 6 } });
  // Once they are a second old, the hoarder takes copies of the eight oldest.
  for (const end = Date.now() + 15000; copyHoarder.held.length < 8; await sleep(50))
    assert.ok(Date.now() < end, `the hoarder holds ${copyHoarder.held.length} copies`);
  // An honest worker measures its speed on a small job, then is offered copies of the two
  // stalled leases behind the eight: it finishes them.
  await h.submitRandom(server.url, 2, 2, 4, 2, 6);
  const honest = await h.startWorker(t, server.url, { name: "honest", inFlight: 1 });
  for (const end = Date.now() + 15000; (await h.api(server.url, `/api/jobs/${job.id}`)).json.tasks_done < 8; await sleep(50))
    assert.ok(Date.now() < end, `the job has ${(await h.api(server.url, `/api/jobs/${job.id}`)).json.tasks_done} of 16 tiles, not 8`);
  t.diagnostic(`the honest worker did ${honest.stats.accepted} tasks, ${(await h.api(server.url, "/api/status")).json.duplicates} copies in all`);
});

// ---- 8. Tiles that can never be returned ----------------------------------------------------



// ---- 9. Non-finite bounds -------------------------------------------------------------------



// ---- 10. Unbounded metric labels ------------------------------------------------------------



// ---- 12. Stale standing ---------------------------------------------------------------------

test("12. stale standing: a worker caught lying on one connection loses its standing on all of them", async (t) => {
  const server = await h.startServer(t);
  await h.submitRandom(server.url, 16, 2, 16, 2); // 64 tiles
  /** Takes one task on `socket` and answers it, honestly or not; resolves with the ack. */
  const answer = async (socket, lie = false) => {
    const next = h.once(socket, "task_assigned");
    socket.emit("request_task");
    const task = await next;
    const c = h.matmul(h.fromBytes(task.dtype, task.a), h.fromBytes(task.dtype, task.b), task.m, task.k, task.n);
    if (lie) c[0] += 1000;
    const ack = h.once(socket, "result_ack");
    socket.emit("task_result", { task_id: task.task_id, c: h.toBytes(task.dtype, c), compute_ms: 1 });
    return (await ack).accepted;
  };
  const first = await h.registered(t, server.url, { name: "tab-1" });
  for (let i = 0; i < 10; i++) assert.equal(await answer(first.socket), true);
  // A second tab of the same worker (same token), trusted with twelve leases by now.
  const second = await h.registered(t, server.url, { name: "tab-2", token: first.ack.token });
  assert.equal(second.ack.worker_id, first.ack.worker_id);
  // The first tab is caught lying.
  assert.equal(await answer(first.socket, true), false);
  // The second tab asks for eight tasks and gets two: the record it reads is the one just spent.
  let got = 0;
  second.socket.on("task_assigned", () => got++);
  for (let i = 0; i < 8; i++) second.socket.emit("request_task");
  await sleep(1000);
  assert.equal(got, 2, `the second tab got ${got} tasks`);
});

// (11, the dashboard handing its token to any server, is a browser test: web/test/e2e/.)
