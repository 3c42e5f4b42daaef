// Volunteers come and go, and servers die: nothing accepted may be lost, and every job must
// still finish with the right product.

import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, openSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import {
  ON_POSTGRES, api, assertClose, downloadNpy, referenceProduct, once, randomMatrix, registered, rowsOf, startServer,
  startWorker, toBytes, waitForJob, submitRandom,
} from "./helpers.mjs";

test("a worker that disconnects mid-task has its tasks re-queued at once", async (t) => {
  // A long lease: only the disconnect can bring the task back within the test's time.
  const server = await startServer(t, { env: { LEASE_MS: "60000" } });
  const job = await submitRandom(server.url, 20, 10, 20, 10);
  const { socket: quitter } = await registered(t, server.url, { name: "quitter" });
  const assigned = once(quitter, "task_assigned");
  quitter.emit("request_task");
  const task = await assigned;
  let status = (await api(server.url, "/api/status")).json;
  assert.equal(status.tasks.leased, 1);
  quitter.disconnect();
  const deadline = Date.now() + 5000;
  while (status.tasks.leased !== 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    status = (await api(server.url, "/api/status")).json;
  }
  assert.equal(status.tasks.leased, 0, "the lease was released on disconnect");
  const helper = await startWorker(t, server.url);
  await waitForJob(server.url, job.id);
  assert.ok(helper.stats.tasks.includes(task.task_id), "the abandoned task was served by another worker");
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
});

test("a lease that passes its deadline without a heartbeat goes back to the queue", async (t) => {
  const server = await startServer(t, { env: { LEASE_MS: "400" } });
  const job = await submitRandom(server.url, 16, 8, 16, 8, 3);
  const silent = await startWorker(t, server.url, { name: "silent", inFlight: 1, behaviour: { holdFirst: true } });
  // Until its task arrives (a loaded machine may take longer than a lease).
  for (const end = Date.now() + 10000; silent.held.length === 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
  assert.equal(silent.held.length, 1);
  const held = silent.held[0];
  const honest = await startWorker(t, server.url, { name: "honest" });
  await waitForJob(server.url, job.id, { ms: 20000 });
  assert.ok(honest.stats.tasks.includes(held.task_id), "the expired task was re-leased");
  // The silent worker answers after its lease ended: refused.
  const ack = once(silent.socket, "result_ack");
  silent.socket.emit("task_result", { task_id: held.task_id, c: toBytes("f32", new Array(64).fill(0)) });
  const late = await ack;
  assert.equal(late.accepted, false);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
});

test("heartbeats keep a slow worker's lease alive", async (t) => {
  const server = await startServer(t, { env: { LEASE_MS: "400" } });
  const job = await submitRandom(server.url, 4, 4, 4, 4, 5);
  const { socket, ack } = await registered(t, server.url, { name: "slow" });
  const beat = setInterval(() => socket.emit("heartbeat"), ack.heartbeat_interval_ms);
  t.after(() => clearInterval(beat));
  const assigned = once(socket, "task_assigned");
  socket.emit("request_task");
  const task = await assigned;
  await new Promise((r) => setTimeout(r, 1200)); // three leases long
  const a = new Float32Array(task.a.buffer.slice(task.a.byteOffset, task.a.byteOffset + task.a.length));
  const b = new Float32Array(task.b.buffer.slice(task.b.byteOffset, task.b.byteOffset + task.b.length));
  const result = once(socket, "result_ack");
  socket.emit("task_result", { task_id: task.task_id, c: toBytes("f32", referenceProduct(a, b, 4, 4, 4)) });
  assert.equal((await result).accepted, true);
  await waitForJob(server.url, job.id);
});

test("heartbeats alone keep a lease for at most 40 leases; then the task goes to another worker", async (t) => {
  // 40 leases of 100 ms: a hung page's heartbeats hold its task for 4 s at most.
  const server = await startServer(t, { env: { LEASE_MS: "100" } });
  const job = await submitRandom(server.url, 4, 4, 4, 4, 6); // one tile
  const { socket: hung, ack } = await registered(t, server.url, { name: "hung" });
  const beat = setInterval(() => hung.emit("heartbeat"), ack.heartbeat_interval_ms);
  t.after(() => clearInterval(beat));
  const assigned = once(hung, "task_assigned");
  hung.emit("request_task");
  const task = await assigned;
  // A newcomer has no measured speed, so it is never given a copy: only the cap frees the task.
  const newcomer = await startWorker(t, server.url, { name: "newcomer", inFlight: 1 });
  await waitForJob(server.url, job.id, { ms: 15000 });
  // The newcomer computed the task (twice at most if, on a loaded machine, its own 100 ms lease
  // ran out before its result was stored) and nothing else.
  assert.ok(newcomer.stats.tasks.length >= 1, "the newcomer got the task");
  assert.ok(newcomer.stats.tasks.every((id) => id === task.task_id), `${newcomer.stats.tasks}`);
  assert.equal((await api(server.url, "/api/status")).json.duplicates, 0);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
});

test("a task every trusted worker fails fails its job, naming the task and the reasons", async (t) => {
  // Two workers at two addresses (a trusted proxy's X-Forwarded-For), each earning trust on
  // the job's other tiles, both run out of memory on the last one.
  // Both are connected before the job comes: a worker connecting after it could find the
  // other had taken all 35 tiles in a few milliseconds, and fail the last one untrusted.
  const server = await startServer(t, { env: { MAX_TASK_FAILURES: "2", TRUST_PROXY: "true" } });
  const behaviour = { failIf: (task) => (task.task_id === 36 ? "out of memory" : null) };
  for (const address of ["10.0.0.1", "10.0.0.2"])
    await startWorker(t, server.url, { name: address, behaviour, headers: { "x-forwarded-for": address } });
  const job = await submitRandom(server.url, 12, 4, 12, 2); // 36 tiles, task ids 1..36
  const failed = await waitForJob(server.url, job.id, { status: "failed" });
  assert.match(failed.error, /task 36 \(tile 5,5\) failed on 2 trusted workers at 2 addresses: out of memory/);
  // Tiles still in flight when the job failed were withdrawn with it.
  assert.ok(failed.tasks_done <= 35, `${failed.tasks_done} tiles done`);
  const status = (await api(server.url, "/api/status")).json;
  assert.equal(status.tasks.queued + status.tasks.leased, 0);
});

test("a server killed with SIGKILL mid-job restarts and the job finishes; nothing accepted is lost", async (t) => {
  const first = await startServer(t, { env: { LEASE_MS: "5000" } });
  const job = await submitRandom(first.url, 60, 30, 60, 10, 9);
  const worker = await startWorker(t, first.url, {
    name: "survivor", inFlight: 1, reconnection: true, behaviour: { delayMs: 30 },
  });
  while (worker.stats.accepted < 8) await new Promise((r) => setTimeout(r, 20));
  await first.kill("SIGKILL");
  const acceptedBefore = worker.stats.accepted;

  const second = await startServer(t, { dbPath: first.dbPath, port: first.port, env: { LEASE_MS: "5000" } });
  const resumed = (await api(second.url, `/api/jobs/${job.id}`)).json;
  assert.ok(resumed.tasks_done >= acceptedBefore, `${resumed.tasks_done} ≥ ${acceptedBefore} accepted before the kill`);
  const status = (await api(second.url, "/api/status")).json;
  assert.equal(status.tasks.leased, 0, "leases from before the restart were re-queued");
  await waitForJob(second.url, job.id, { ms: 30000 });
  assertClose((await downloadNpy(second.url, job.id)).data, job.want, job.k);
});

test("a split job's partials survive SIGKILL, and one lost from the disk is computed again", async (t) => {
  const first = await startServer(t, { env: { LEASE_MS: "5000" } });
  // 6 × 6 tiles in 3 slices of k: 108 partials.
  const job = await submitRandom(first.url, 60, 30, 60, 10, 19, { k_split: 3 });
  assert.equal(job.tasks, 108);
  const worker = await startWorker(t, first.url, {
    name: "survivor", inFlight: 1, reconnection: true, behaviour: { delayMs: 20 },
  });
  while (worker.stats.accepted < 20) await new Promise((r) => setTimeout(r, 20));
  await first.kill("SIGKILL");
  const acceptedBefore = worker.stats.accepted;
  if (!ON_POSTGRES) {
    // As a crash of the machine would leave it: the first tile row's partials, committed as
    // done, never reached the disk. Their checksums find them at the start.
    const partials = join(dirname(first.dbPath), "jobs", job.id, "partials.npy");
    const fd = openSync(partials, "r+");
    writeSync(fd, Buffer.alloc(10 * 3 * 60 * 4), 0, 10 * 3 * 60 * 4, 128);
    closeSync(fd);
  }
  const second = await startServer(t, { dbPath: first.dbPath, port: first.port, env: { LEASE_MS: "5000" } });
  const resumed = (await api(second.url, `/api/jobs/${job.id}`)).json;
  if (ON_POSTGRES) assert.ok(resumed.tasks_done >= acceptedBefore, `${resumed.tasks_done} ≥ ${acceptedBefore}`);
  else assert.ok(resumed.tasks_done < acceptedBefore, `lost partials re-queued: ${resumed.tasks_done} < ${acceptedBefore}`);
  await waitForJob(second.url, job.id, { ms: 30000 });
  assertClose((await downloadNpy(second.url, job.id)).data, job.want, job.k);
});
