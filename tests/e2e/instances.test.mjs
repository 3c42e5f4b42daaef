// Several orchestrators on one PostgreSQL (#18): they share the grid's state through the
// database, jobs' inputs and results included (db/chunks.rs). Each has a DATA_DIR of its own,
// as on a host without a shared disk: there it keeps only its copies of running jobs' inputs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { createDatabase, psql, startPostgres } from "../support/postgres.mjs";
import { api, assertClose, downloadNpy, metric, npyDecode, registered, startServer, startWorker, submitRandom, tempDir, waitForJob } from "./helpers.mjs";

/**
 * A private PostgreSQL and two servers on it, `one` and `two`, each with its own DATA_DIR
 * (`dataDir(name)`); `start` brings up another under `name`. `env` adds to the servers'
 * settings; `sql` runs a statement on their database.
 */
async function twoInstances(t, env = {}) {
  const pg = await startPostgres({ t });
  const dir = tempDir(t);
  const url = await createDatabase(pg);
  const dataDir = (name) => join(dir, `${name}-jobs`);
  const start = (name) =>
    startServer(t, { dbPath: join(dir, `${name}.db`), env: { DATABASE_URL: url, DATA_DIR: dataDir(name), ...env } });
  const sql = (text) => psql(pg, url.split("/").pop(), text);
  return { one: await start("one"), two: await start("two"), start, dataDir, sql };
}

/** Polls `check` until it holds, for up to `ms`. */
async function eventually(check, ms = 30000) {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
    if (await check()) return true;
  }
  return check();
}

/** A worker on `server` that takes one task and keeps it (heartbeating), once it has it. */
async function holderOn(t, server) {
  const holder = await startWorker(t, server.url, { inFlight: 1, behaviour: { holdFirst: true } });
  const deadline = Date.now() + 20000;
  while (holder.held.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  assert.equal(holder.held.length, 1, "the worker holds a task");
  return holder;
}

test("two instances on one PostgreSQL share a job: every tile is leased once, across both, the product is exact, and exactly one instance finishes the job", async (t) => {
  const { one, two, sql } = await twoInstances(t);
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
  // Each instance counts its own results (job_progress); the job's count is their sum, on both.
  const counted = (await sql(`SELECT done FROM job_progress WHERE job_id = '${job.id}'`)).trim().split("\n").map(Number);
  assert.equal(counted.length, 2, "both instances counted results");
  assert.equal(counted[0] + counted[1], 400);
  for (const server of [one, two]) assert.equal((await api(server.url, `/api/jobs/${job.id}`)).json.tasks_done, 400);
  // The batch that finished the job, or the settling after its commit, said so on exactly one
  // instance: not on none (left to the sweep), not on both.
  const finishes = async () => (await metric(one.url, "brain_job_duration_seconds_count")) + (await metric(two.url, "brain_job_duration_seconds_count"));
  assert.equal(await finishes(), 1);
  // An instance that died after committing a job's last results, before settling the job:
  // another's sweep marks it done, within a second or so.
  // The row says it was reopened; the API may already show it settled again, since the sweep
  // runs every second and can come between this statement and a request (it did once).
  const reopened = await sql(`UPDATE jobs SET status = 'running', finished_at = NULL WHERE id = '${job.id}' RETURNING id`);
  assert.match(reopened, new RegExp(job.id));
  assert.ok(await eventually(async () => (await api(one.url, `/api/jobs/${job.id}`)).json.status === "done", 10000), "the sweep settled the job");
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

test("a job submitted to one, which is then killed, computed on two only, is downloaded whole and in ranges from a third started afterwards with an empty DATA_DIR", async (t) => {
  const { one, two, start, dataDir, sql } = await twoInstances(t);
  // Tiles that do not divide the shape: the last row and column of tiles are narrower.
  const job = await submitRandom(one.url, 37, 13, 29, 8, 31); // 5 × 4 tiles
  assert.ok(Number(await sql(`SELECT count(*) FROM job_chunks WHERE job_id = '${job.id}'`)) >= 2, "its inputs are in the database");
  // Acknowledged is enough: the instance that took the upload dies at once, its disk with it.
  one.proc.kill("SIGKILL");
  await one.exited;
  const workers = [];
  for (let i = 0; i < 2; i++) workers.push(await startWorker(t, two.url, { name: `on-two-${i}` }));
  await waitForJob(two.url, job.id, { ms: 60000 });
  assert.equal(workers.reduce((sum, w) => sum + w.stats.accepted, 0), job.tasks, "two's workers did every tile");
  const copied = two.log().replace(/\x1b\[[0-9;]*m/g, "").match(/copied a job's input from the database/g) ?? [];
  assert.equal(copied.length, 2, "two copied A and B in once each, whatever asked for them");
  // Its inputs leave the database once it is done.
  assert.ok(await eventually(async () => (await sql(`SELECT count(*) FROM job_chunks WHERE job_id = '${job.id}'`)).trim() === "0"));
  const three = await start("three");
  const whole = await api(three.url, `/api/jobs/${job.id}/result`, { raw: true });
  assert.equal(whole.status, 200);
  const bytes = Buffer.from(await whole.arrayBuffer());
  assert.equal(bytes.length, 128 + 37 * 29 * 4);
  assertClose(npyDecode(bytes).data, job.want, job.k);
  assert.deepEqual(Buffer.from(await (await api(two.url, `/api/jobs/${job.id}/result`, { raw: true })).arrayBuffer()), bytes, "every instance serves the same bytes");
  const etag = whole.headers.get("etag");
  for (const [range, from, to] of [["bytes=0-99", 0, 99], ["bytes=100-1000", 100, 1000], ["bytes=1500-", 1500, bytes.length - 1], ["bytes=-77", bytes.length - 77, bytes.length - 1]]) {
    const part = await api(three.url, `/api/jobs/${job.id}/result`, { raw: true, headers: { range, "if-range": etag } });
    assert.equal(part.status, 206, range);
    assert.equal(part.headers.get("content-range"), `bytes ${from}-${to}/${bytes.length}`);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), bytes.subarray(from, to + 1), range);
  }
  const json = await api(three.url, `/api/jobs/${job.id}/result?format=json`);
  assertClose(json.json.c.flat(), job.want, job.k);
  assert.deepEqual(readdirSync(dataDir("three")), [], "the third needed no copy of anything");
});

test("a cancelled job leaves nothing in PostgreSQL, and the instances drop their copies of its inputs", async (t) => {
  const { one, two, dataDir, sql } = await twoInstances(t);
  const job = await submitRandom(one.url, 40, 8, 40, 4, 32); // 100 tiles
  const worker = await startWorker(t, two.url, { inFlight: 1, behaviour: { delayMs: 30 } });
  assert.ok(await eventually(() => worker.stats.accepted >= 3), "some tiles are done");
  assert.ok(existsSync(join(dataDir("two"), job.id, "a.npy")), "two copied the inputs in to serve them");
  const count = async (where) => Number(await sql(`SELECT count(*) FROM ${where} AND job_id = '${job.id}'`));
  assert.ok((await count("tasks WHERE result IS NOT NULL")) >= 3, "done tiles' bytes are in the database");
  const res = await api(one.url, `/api/jobs/${job.id}`, { method: "DELETE" });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  assert.equal(await count("job_chunks WHERE true"), 0, "no chunk of its inputs is left");
  assert.equal(await count("tasks WHERE result IS NOT NULL"), 0, "no tile of its result is left");
  assert.ok(!existsSync(join(dataDir("one"), job.id)), "the instance that cancelled it dropped its folder at once");
  assert.ok(await eventually(() => !existsSync(join(dataDir("two"), job.id)), 60000), "the other dropped its copy on its own");
});
