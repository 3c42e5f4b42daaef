// Several orchestrators on one PostgreSQL (#18): they share the grid's state through the
// database. The jobs' files are on a folder both reach here (one machine); the store that
// needs no shared disk comes later.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { createDatabase, startPostgres } from "../support/postgres.mjs";
import { api, assertClose, downloadNpy, registered, startServer, startWorker, submitRandom, tempDir, waitForJob } from "./helpers.mjs";

/**
 * A private PostgreSQL and two servers on it, `one` and `two`, sharing a jobs' folder; `start`
 * brings up another under `name`. `env` adds to the servers' settings.
 */
async function twoInstances(t, env = {}) {
  const pg = await startPostgres({ t });
  const dir = tempDir(t);
  env = { DATABASE_URL: await createDatabase(pg), DATA_DIR: join(dir, "jobs"), ...env };
  const start = (name) => startServer(t, { dbPath: join(dir, `${name}.db`), env });
  return { one: await start("one"), two: await start("two"), start };
}

/** A worker on `server` that takes one task and keeps it (heartbeating), once it has it. */
async function holderOn(t, server) {
  const holder = await startWorker(t, server.url, { inFlight: 1, behaviour: { holdFirst: true } });
  const deadline = Date.now() + 20000;
  while (holder.held.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  assert.equal(holder.held.length, 1, "the worker holds a task");
  return holder;
}

test("two instances on one PostgreSQL share a job: every tile is leased once, across both, and the product is exact", async (t) => {
  const { one, two } = await twoInstances(t);
  const job = await submitRandom(one.url, 80, 8, 80, 4, 21); // 400 tiles, submitted to one
  // Workers on both, asking for several tasks at once: the instances claim side by side.
  const workers = [];
  for (const server of [one, two, one, two]) workers.push(await startWorker(t, server.url, { inFlight: 3 }));
  await waitForJob(two.url, job.id, { ms: 60000 });
  assertClose((await downloadNpy(two.url, job.id)).data, job.want, job.k);
  const holders = new Map();
  workers.forEach((w, i) => w.stats.tasks.forEach((task) => holders.set(task, [...(holders.get(task) ?? []), i])));
  const twice = [...holders].filter(([, who]) => who.length > 1);
  assert.deepEqual(twice, [], "no task handed to two workers");
  assert.equal(holders.size, 400);
  for (const [i, w] of workers.entries()) {
    assert.ok(w.stats.accepted > 0, `worker ${i} (on instance ${i % 2 ? "two" : "one"}) was served`);
    assert.equal(w.stats.refused, 0);
  }
});

test("an instance that starts or stops puts back only its own leases, never another instance's", async (t) => {
  const { one, two, start } = await twoInstances(t);
  const job = await submitRandom(one.url, 8, 4, 8, 4, 22); // 4 tiles
  // A worker on two takes a task and keeps it, heartbeating: its lease is alive.
  const holder = await holderOn(t, two);
  const held = holder.held[0].task_id;
  const state = async () => (await api(two.url, `/api/jobs/${job.id}/tiles`)).json.tiles.find((tile) => tile.task_id === held).state;
  assert.equal(await state(), "leased");
  // A third instance starts (as a deploy brings one up), and the first stops cleanly.
  await start("three");
  assert.equal(await state(), "leased", "a starting instance left it alone");
  one.proc.kill("SIGTERM");
  assert.equal((await one.exited).code, 0);
  assert.equal(await state(), "leased", "a stopping instance left it alone");
  assert.deepEqual(holder.stats.cancelled, [], "the worker was never told to drop it");
});

test("an instance killed with SIGKILL: another puts its leases back at once, counted against nobody, and the job finishes", async (t) => {
  // Leases far longer than the test: only the instance's silence can free the held task.
  const { one, two } = await twoInstances(t, { LEASE_MS: "120000", INSTANCE_TIMEOUT_MS: "2000" });
  const job = await submitRandom(one.url, 8, 4, 8, 4, 23); // 4 tiles
  const holder = await holderOn(t, two);
  two.proc.kill("SIGKILL");
  await two.exited;
  await startWorker(t, one.url, { name: "after" });
  await waitForJob(one.url, job.id, { ms: 30000 });
  assertClose((await downloadNpy(one.url, job.id)).data, job.want, job.k);
  // The holder comes back to the surviving instance with its token: its record is clean.
  const back = await registered(t, one.url, { name: "holder", token: holder.token });
  assert.equal(back.ack.worker_id, holder.workerId);
  const record = (await api(one.url, "/api/workers")).json.find((w) => w.worker_id === holder.workerId);
  assert.ok(record, "the holder is listed again");
  assert.deepEqual([record.reputation.timed_out, record.reputation.disconnected_mid_task], [0, 0], "nothing was counted against its worker");
});
