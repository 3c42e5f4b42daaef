// Trust nobody: a mixed crowd of honest, flaky and dishonest workers, and a server killed
// mid-job, must still give the exact product; liars are quarantined, honest workers never.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  api, assertClose, connect, downloadNpy, fromBytes, referenceProduct, once, randomMatrix, registered, rowsOf,
  startQuitter, startServer, startWorker, toBytes, waitForJob, submitRandom,
} from "./helpers.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a mixed crowd and a SIGKILLed server still give the exact product", async (t) => {
  const env = { LEASE_MS: "1500", MAX_EVENTS_PER_SEC: "300" };
  let server = await startServer(t, { env });
  const { port, dbPath } = server;
  const job = await submitRandom(server.url, 160, 32, 160, 8, 11); // 400 tiles
  assert.equal(job.tasks, 400);

  const opts = (name, behaviour = {}, inFlight = 2) => ({ name, behaviour, inFlight, reconnection: true });
  const honest = await Promise.all([1, 2, 3].map((i) => startWorker(t, server.url, opts(`honest-${i}`, { delayMs: 20 }))));
  const liars = await Promise.all([
    startWorker(t, server.url, opts("liar-perturb", { lie: "perturb" })),
    startWorker(t, server.url, opts("liar-zeros", { lie: "zeros" })),
    startWorker(t, server.url, opts("liar-shape", { lie: "shape" })),
  ]);
  const silent = await startWorker(t, server.url, opts("silent", { holdAll: true }));

  // A worker that takes a task and leaves, over and over.
  const quitter = startQuitter(() => [`http://127.0.0.1:${port}`]);

  // A worker that floods the server with events: told, then disconnected.
  const { socket: flooder } = await registered(t, server.url, { name: "flooder" });
  const limited = new Promise((res) => flooder.on("protocol_error", (e) => e.code === "rate_limited" && res(e)));
  const gone = once(flooder, "disconnect", 5000);
  for (let i = 0; i < 2000; i++) flooder.emit("heartbeat");
  assert.match((await limited).message, /more than 300 events per second/);
  await gone;

  // Kill the server with SIGKILL a third of the way through, and bring it back.
  while ((await api(server.url, `/api/jobs/${job.id}`)).json.tasks_done < 130) await sleep(50);
  await server.kill("SIGKILL");
  server = await startServer(t, { dbPath, port, env });
  const afterRestart = (await api(server.url, `/api/jobs/${job.id}`)).json;
  assert.ok(afterRestart.tasks_done >= 130, "accepted results survived the kill");

  const done = await waitForJob(server.url, job.id, { ms: 90000 });
  const quitterTasks = await quitter.stop();
  assert.equal(done.tasks_done, 400);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);

  // Every liar is quarantined; no honest worker is, and none was ever refused.
  for (const liar of liars) {
    const deadline = Date.now() + 5000;
    while (!liar.stats.quarantined && Date.now() < deadline) await sleep(50);
    assert.ok(liar.stats.quarantined, `${liar.socket.id} quarantined`);
    assert.ok(liar.stats.refused >= 3, "liars were refused");
  }
  const workers = (await api(server.url, "/api/workers")).json;
  for (const w of workers) {
    const liar = w.name.startsWith("liar");
    assert.equal(w.reputation.quarantined, liar, `${w.name}: ${JSON.stringify(w.reputation)}`);
    if (w.name.startsWith("honest")) assert.equal(w.reputation.refused, 0);
  }
  assert.ok(honest.every((h) => h.stats.refused === 0 || h.stats.reasons.every((r) => !/verification/.test(r))));
  const status = (await api(server.url, "/api/status")).json;
  console.log(
    `crowd figures: tiles ${done.tasks_total}, refused results ${status.results_refused}, ` +
      `re-leases ${status.re_leases}, duplicates (since restart) ${status.duplicates}, ` +
      `quitter leases abandoned ${quitterTasks}, silent tasks held ${silent.stats.assigned}, ` +
      `server restarts survived 1`,
  );
  assert.ok(status.re_leases > 0, "abandoned and expired tasks were leased again");
});

test("a fast honest worker is never taken for a flood; results for tasks it does not hold still are", async (t) => {
  // 10 events a second (bursts of 20): the worker below answers 256 tasks as fast as they
  // come, more than 500 events in a second or two, all of them the server's own pace.
  const server = await startServer(t, { env: { MAX_EVENTS_PER_SEC: "10" } });
  const job = await submitRandom(server.url, 64, 4, 64, 4, 12); // 256 tiles
  const errors = [];
  const worker = await startWorker(t, server.url, { name: "fast", inFlight: 4 });
  worker.socket.on("protocol_error", (e) => errors.push(e));
  const started = Date.now();
  await waitForJob(server.url, job.id, { ms: 60000 });
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
  assert.deepEqual(errors, []);
  assert.ok(worker.socket.connected, "still connected");
  t.diagnostic(`256 tasks in ${Date.now() - started} ms`);

  // The same number of results for tasks it was never given: a flood, told and cut.
  const { socket: flooder } = await registered(t, server.url, { name: "flooder" });
  const limited = new Promise((res) => flooder.on("protocol_error", (e) => e.code === "rate_limited" && res(e)));
  const gone = once(flooder, "disconnect", 5000);
  for (let i = 0; i < 256; i++) flooder.emit("task_result", { task_id: 1e9 + i, c: Buffer.alloc(64) });
  assert.match((await limited).message, /more than 10 events per second/);
  await gone;
});

test("a worker that heartbeats but never answers is overtaken by a duplicate near the end", async (t) => {
  const server = await startServer(t, { env: { LEASE_MS: "60000" } });
  const job = await submitRandom(server.url, 8, 8, 8, 4, 21); // 4 tiles
  const slow = await startWorker(t, server.url, { name: "slow", inFlight: 1, behaviour: { holdFirst: true } });
  const fast = await startWorker(t, server.url, { name: "fast", inFlight: 1 });
  await waitForJob(server.url, job.id, { ms: 20000 });
  const held = slow.held[0].task_id;
  assert.ok(fast.stats.tasks.includes(held), "the fast worker got a copy of the held tile");
  const deadline = Date.now() + 3000;
  while (!slow.stats.cancelled.includes(held) && Date.now() < deadline) await sleep(20);
  assert.deepEqual(slow.stats.cancelled, [held], "the slow worker was told to stop");
  assert.equal((await api(server.url, "/api/status")).json.duplicates, 1);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
});

test("a worker that answered before and then hangs while heartbeating is overtaken too", async (t) => {
  const server = await startServer(t, { env: { LEASE_MS: "60000" } });
  const job = await submitRandom(server.url, 8, 8, 8, 4, 22); // 4 tiles
  // Answers its first tile honestly, with a compute time, so the server knows its speed; then
  // holds its second forever while its heartbeats keep the lease alive.
  const { socket: hung, ack } = await registered(t, server.url, { name: "hung", threads: 1 });
  const beat = setInterval(() => hung.emit("heartbeat"), ack.heartbeat_interval_ms);
  t.after(() => clearInterval(beat));
  const cancelled = [];
  hung.on("task_cancelled", ({ task_id }) => cancelled.push(task_id));
  const first = await new Promise((resolve) => {
    hung.once("task_assigned", resolve);
    hung.emit("request_task");
  });
  const c = referenceProduct(fromBytes(first.dtype, first.a), fromBytes(first.dtype, first.b), first.m, first.k, first.n);
  const answered = once(hung, "result_ack");
  hung.emit("task_result", { task_id: first.task_id, c: toBytes(first.dtype, c), compute_ms: 50 });
  assert.equal((await answered).accepted, true);
  const heldTask = await new Promise((resolve) => {
    hung.once("task_assigned", resolve);
    hung.emit("request_task");
  });
  const held = heldTask.task_id;
  // The worker's known speed says this tile takes about 50 ms: it is long overdue when the
  // other worker runs out of work, and the lease (a minute) cannot expire in time to save it.
  const fast = await startWorker(t, server.url, { name: "fast", inFlight: 1 });
  await waitForJob(server.url, job.id, { ms: 20000 });
  assert.ok(fast.stats.tasks.includes(held), "the fast worker got a copy of the held tile");
  const deadline = Date.now() + 3000;
  while (!cancelled.includes(held) && Date.now() < deadline) await sleep(20);
  assert.deepEqual(cancelled, [held], "the hung worker was told to stop");
  assert.equal((await api(server.url, "/api/status")).json.duplicates, 1);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
});

test("limits: connections per address, tasks per worker, job size; others are unaffected", async (t) => {
  const server = await startServer(t, {
    env: { MAX_CONNECTIONS_PER_IP: "3", MAX_TASKS_PER_WORKER: "2", MAX_JOB_ELEMENTS: "1000" },
  });
  const { socket } = await registered(t, server.url, { name: "greedy" });
  await registered(t, server.url, { name: "second" });
  const job = await submitRandom(server.url, 10, 10, 10, 2);
  for (let i = 0; i < 2; i++) socket.emit("request_task");
  const tooMany = once(socket, "protocol_error");
  socket.emit("request_task");
  const err = await tooMany;
  assert.equal(err.code, "too_many_tasks");
  assert.match(err.message, /limit 2/);

  const third = connect(server.url);
  t.after(() => third.close());
  await once(third, "connect");
  const fourth = connect(server.url);
  t.after(() => fourth.close());
  const refused = await once(fourth, "connect_error");
  assert.match(refused.message, /more than 3 connections/);

  const big = await api(server.url, "/api/jobs", {
    method: "POST",
    body: { a: rowsOf(randomMatrix(20, 20, "f64", 1), 20, 20), b: rowsOf(randomMatrix(20, 20, "f64", 1), 20, 20) },
  });
  assert.equal(big.status, 413);
  assert.match(big.json.error, /limit is 1000/);

  socket.close();
  third.close();
  await sleep(200);
  await startWorker(t, server.url, { name: "honest" });
  await waitForJob(server.url, job.id);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
});

test("a worker token brings back the same worker and its record", async (t) => {
  const server = await startServer(t);
  const first = await registered(t, server.url, { name: "tab" });
  assert.match(first.ack.token, /^[0-9a-f]{48}$/);
  first.socket.close();
  const again = await registered(t, server.url, { name: "tab", token: first.ack.token });
  assert.equal(again.ack.worker_id, first.ack.worker_id);
  const fresh = await registered(t, server.url, { name: "tab", token: "not-a-token-we-issued-0000000000000" });
  assert.notEqual(fresh.ack.worker_id, first.ack.worker_id);
});

/**
 * A patient cheater: 32 honest answers (past the 20 that bring its checks down to two random
 * vectors, whatever acks are still being counted), then one tile with errors that cancel in
 * pairs within a row (two vectors miss them a quarter of the time), then a grossly wrong tile
 * that is always caught. Resolves with whether the paired errors were accepted.
 */
async function patientCheater(t, url, name) {
  const { socket, ack } = await registered(t, url, { name });
  const beat = setInterval(() => socket.emit("heartbeat"), ack.heartbeat_interval_ms);
  t.after(() => clearInterval(beat));
  const assigned = [];
  const acks = new Map();
  socket.on("task_assigned", (task) => assigned.push(task));
  socket.on("result_ack", (a) => acks.set(a.task_id, a));
  const until = async (what, ok) => {
    for (const end = Date.now() + 20000; !ok(); await sleep(5))
      if (Date.now() > end) throw new Error(`${name}: timed out waiting for ${what}`);
  };
  const take = async (n) => {
    const from = assigned.length;
    for (let i = 0; i < n; i++) socket.emit("request_task");
    await until(`${n} tasks`, () => assigned.length >= from + n);
    return assigned.slice(from, from + n);
  };
  const answer = async (tasks, lie) => {
    for (const task of tasks) {
      const c = referenceProduct(fromBytes(task.dtype, task.a), fromBytes(task.dtype, task.b), task.m, task.k, task.n);
      if (lie === "pair") [c[0], c[1]] = [c[0] + 0.5, c[1] - 0.5]; // far above the bound, no rounding near it
      if (lie === "gross") c[0] += 1e6;
      socket.emit("task_result", { task_id: task.task_id, c: toBytes(task.dtype, c), compute_ms: 1 });
    }
    await until("acks", () => tasks.every((x) => acks.has(x.task_id)));
    return tasks.map((x) => acks.get(x.task_id).accepted);
  };
  // In rounds of two: a new worker holds two leases until it has delivered.
  for (let round = 0; round < 16; round++) {
    assert.ok((await answer(await take(2))).every(Boolean), "honest answers are accepted");
  }
  const [slipped] = await answer(await take(1), "pair");
  assert.equal((await answer(await take(1), "gross"))[0], false);
  return slipped;
}

test("a worker caught lying has its earlier accepted tiles checked again, and the wrong ones redone", async (t) => {
  // Sixteen volunteers on one machine: the per-address lease cap would make them one.
  const server = await startServer(t, { env: { LEASE_MS: "60000", MAX_LEASES_PER_ADDRESS: "1000" } });
  // 600 tiles of 2×2 (k = 2): 16 cheaters take 544 of them.
  const job = await submitRandom(server.url, 40, 2, 60, 2, 31);
  const cheaters = Array.from({ length: 16 }, (_, i) => patientCheater(t, server.url, `patient-${i}`));
  const slipped = (await Promise.all(cheaters)).filter(Boolean).length;
  // Without the second check the product would be wrong unless no lie slipped ((3/4)^16, 1 %).
  t.diagnostic(`${slipped} of 16 paired-error tiles passed their first check`);
  // Every tile that slipped through is taken back: the job counts the 512 honest ones only.
  for (const end = Date.now() + 10000; ; await sleep(50)) {
    const { tasks_done } = (await api(server.url, `/api/jobs/${job.id}`)).json;
    if (tasks_done === 512) break;
    assert.ok(Date.now() < end, `the job still counts ${tasks_done} tiles done, not 512`);
  }
  await startWorker(t, server.url, { name: "honest", inFlight: 8 });
  await waitForJob(server.url, job.id, { ms: 30000 });
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
  const workers = (await api(server.url, "/api/workers")).json;
  assert.ok(workers.every((w) => !w.quarantined), "a few refusals among many results do not quarantine");
});
