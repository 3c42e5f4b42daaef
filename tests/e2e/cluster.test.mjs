// Three instances on one PostgreSQL and one Redis, as an operator runs the grid for more
// volunteers than one process holds and for deploys that drop nobody: dashboards see every
// instance's progress, a job ended on one instance is withdrawn from workers on another, a
// SIGTERMed instance's volunteers come back through the balancer to the others, and the trust
// tests' crowd, spread over the instances with one of them SIGKILLed mid-job, still gives the
// exact product.
//
// These tests start their own PostgreSQL and Redis whatever the suite's engine, so they run
// in the SQLite pass only (scripts/test-e2e.sh).

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  api, assertClose, connect, downloadNpy, once, registered, startQuitter, startServer, startWorker, submitRandom, tempDir,
  waitForJob,
} from "./helpers.mjs";
import { createDatabase, startPostgres } from "../support/postgres.mjs";
import { redisCommand, startRedis } from "../support/redis.mjs";
import { startBalancer } from "../support/balancer.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits for `check()` to hold, polling; fails with `what` after `ms`. */
async function until(check, what, ms = 20000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}

/**
 * `names.length` instances on a private PostgreSQL and Redis. Each has its own database path
 * (hence its INSTANCE_ID, kept across a restart) and `start(name)` starts one again.
 */
async function cluster(t, names = ["a", "b", "c"], env = {}) {
  const [pg, redis] = await Promise.all([startPostgres({ t }), startRedis({ t })]);
  const dir = tempDir(t);
  env = { DATABASE_URL: await createDatabase(pg), REDIS_URL: redis.url, ...env };
  // Each its own DATA_DIR: the jobs' matrices are in PostgreSQL, and each keeps its copies.
  const start = (name, port = 0) =>
    startServer(t, { dbPath: join(dir, `${name}.db`), port, env: { DATA_DIR: join(dir, `${name}-jobs`), ...env } });
  const servers = {};
  for (const name of names) servers[name] = await start(name);
  return { ...servers, start, redis };
}

/** A dashboard on `server`, and the tasks it has seen done. */
async function watch(t, server) {
  const dashboard = connect(server.url);
  t.after(() => dashboard.close());
  await once(dashboard, "connect");
  const done = new Set();
  dashboard.on("tile_update", (u) => u.state === "done" && done.add(u.task_id));
  dashboard.emit("subscribe_dashboard");
  return { dashboard, done };
}

const workersOnline = async (server) => (await api(server.url, "/api/status")).json.workers_online;

test("a dashboard on one instance sees the tiles workers on another finish, and every instance counts every worker", async (t) => {
  const { a, b, c } = await cluster(t);
  const { dashboard, done } = await watch(t, a);
  // An idle worker on a, registered after the dashboard joined: once c counts it, c has read
  // what a said after its dashboard joined, so c knows its progress is watched.
  await startWorker(t, a.url, { name: "idle-a", inFlight: 0 });
  await until(async () => (await workersOnline(c)) === 1, "c counts the worker on a");
  await startWorker(t, b.url, { name: "idle-b", inFlight: 0 });
  // The figures every page shows are the whole grid's, on every instance.
  const stats = [];
  dashboard.on("grid_stats", (s) => stats.push(s));
  const job = await submitRandom(a.url, 32, 8, 32, 8, 31); // 16 tiles, submitted to a
  for (const i of [1, 2]) await startWorker(t, c.url, { name: `c-${i}` });
  await waitForJob(a.url, job.id, { ms: 30000 });
  assertClose((await downloadNpy(b.url, job.id)).data, job.want, job.k);
  await until(() => done.size === 16, `the dashboard on a saw ${done.size} of 16 tiles done on c`);
  for (const server of [a, b, c]) await until(async () => (await workersOnline(server)) === 4, `${server.url} counts 4 workers`);
  await until(() => stats.some((s) => s.workers_online === 4), "grid_stats on a counts the workers of every instance");
  assert.ok(stats.every((s) => s.workers_online <= 4), "no instance's figures are counted twice");
  // The dashboard's worker table, from any instance, lists every instance's workers once.
  const names = async (server) => (await api(server.url, "/api/workers")).json.map((w) => w.name).sort();
  for (const server of [a, b, c])
    await until(async () => (await names(server)).join() === "c-1,c-2,idle-a,idle-b", `${server.url} lists every worker`);
  const onC = (await api(a.url, "/api/workers")).json.filter((w) => w.name.startsWith("c-"));
  assert.ok(onC.every((w) => w.reputation.verified > 0), "with their records");
});

test("Redis going away stops no work, and once it is back dashboards see the other instances' progress again", async (t) => {
  const { a, b, redis } = await cluster(t, ["a", "b"]);
  const { done } = await watch(t, a);
  await startWorker(t, a.url, { name: "idle-a", inFlight: 0 });
  await until(async () => (await workersOnline(b)) === 1, "b counts the worker on a");
  await redis.stop();
  await startWorker(t, b.url, { name: "b" });
  const during = await submitRandom(a.url, 16, 4, 16, 4, 37); // 16 tiles
  await waitForJob(a.url, during.id, { ms: 30000 });
  assertClose((await downloadNpy(a.url, during.id)).data, during.want, during.k);
  const back = await startRedis({ t, port: redis.port });
  // Both instances are listening again (a Redis subscription does not survive the restart;
  // the server subscribes anew): what is published from now on reaches them.
  const listening = async () => (await redisCommand(back, "PUBSUB", "NUMSUB", "brain-request#/#"))[1] === 2;
  await until(listening, "both instances subscribed again");
  const after = await submitRandom(a.url, 16, 4, 16, 4, 38);
  await waitForJob(a.url, after.id, { ms: 30000 });
  const tiles = (await api(a.url, `/api/jobs/${after.id}/tiles`)).json.tiles.map((tile) => tile.task_id);
  await until(() => tiles.every((id) => done.has(id)), "the dashboard on a saw the tiles b finished after Redis came back");
});

test("a job cancelled on one instance is withdrawn from the worker holding its task on another", async (t) => {
  const { a, b } = await cluster(t, ["a", "b"]);
  const job = await submitRandom(a.url, 8, 4, 8, 4, 32); // 4 tiles
  const holder = await startWorker(t, b.url, { inFlight: 1, behaviour: { holdFirst: true } });
  await until(() => holder.held.length === 1, "the worker on b holds a task");
  assert.equal((await api(a.url, `/api/jobs/${job.id}`, { method: "DELETE" })).status, 200);
  await until(() => holder.stats.cancelled.includes(holder.held[0].task_id), "the worker on b was told to stop", 10000);
  // b took the lease back too: the worker asks again, as the page does, and is served.
  holder.socket.emit("request_task");
  const next = await submitRandom(a.url, 8, 4, 8, 4, 33);
  await waitForJob(a.url, next.id, { ms: 30000 });
  assert.ok(holder.stats.accepted > 0, "the worker computed the next job");
});

test("a worker quarantined on one instance is quarantined on another, where its second tab is connected", async (t) => {
  const { a, b } = await cluster(t, ["a", "b"]);
  await submitRandom(a.url, 32, 4, 32, 4, 36); // 64 tiles
  const liar = await startWorker(t, a.url, { name: "twin", behaviour: { lie: "zeros" } });
  // The same volunteer in a second tab, which the balancer sent to b: idle, but connected.
  const { socket: tab } = await registered(t, b.url, { name: "twin", token: liar.token });
  const told = once(tab, "quarantined", 20000);
  await until(() => liar.stats.quarantined, "the liar quarantined on a");
  assert.equal((await told).reason, liar.stats.quarantined, "told the same reason");
});

test("a rolling deploy: the SIGTERMed instance's volunteers come back through the balancer to the others, and nobody is refused", async (t) => {
  const { a, b, c } = await cluster(t);
  const balancer = await startBalancer({ t, ports: [a.port, b.port, c.port] });
  const job = await submitRandom(a.url, 96, 16, 96, 8, 34); // 144 tiles
  const workers = [];
  for (let i = 0; i < 6; i++)
    workers.push(await startWorker(t, balancer.url, { name: `v-${i}`, reconnection: "as the page", behaviour: { delayMs: 30 } }));
  assert.deepEqual(balancer.connections, [2, 2, 2], "the balancer spread the volunteers");
  const told = [];
  for (const w of workers) w.socket.on("server_shutdown", () => told.push(w.workerId));
  while ((await api(a.url, `/api/jobs/${job.id}`)).json.tasks_done < 30) await sleep(20);
  b.proc.kill("SIGTERM");
  assert.equal((await b.exited).code, 0, "b stopped cleanly");
  assert.equal(told.length, 2, "b's two volunteers were told, and only they");
  await waitForJob(a.url, job.id, { ms: 60000 });
  assertClose((await downloadNpy(c.url, job.id)).data, job.want, job.k);
  // Every volunteer is connected again, to a or c, under the identity it had.
  await until(() => workers.every((w) => w.socket.connected), "every volunteer reconnected");
  assert.equal(balancer.connections[1], 2, "nothing more went to the stopped instance");
  assert.ok(balancer.connections[0] + balancer.connections[2] >= 6, "b's volunteers went to a and c");
  for (const w of workers) assert.equal(w.stats.refused, 0, `${w.workerId} had a result refused: ${w.stats.reasons}`);
  await until(async () => (await api(a.url, "/api/workers")).json.length === 6, "a lists the six volunteers, wherever they are");
  const listed = (await api(a.url, "/api/workers")).json;
  for (const w of workers) {
    const record = listed.find((r) => r.worker_id === w.workerId);
    assert.ok(record, `${w.workerId} is listed`);
    assert.deepEqual([record.reputation.timed_out, record.reputation.disconnected_mid_task], [0, 0], "the deploy was counted against nobody");
  }
});

test("the trust tests' crowd spread over three instances, one SIGKILLed mid-job and started again, gives the exact product", async (t) => {
  const env = { LEASE_MS: "1500", MAX_EVENTS_PER_SEC: "300", INSTANCE_TIMEOUT_MS: "2000" };
  let { a, b, c, start } = await cluster(t, ["a", "b", "c"], env);
  const job = await submitRandom(a.url, 160, 32, 160, 8, 35); // 400 tiles
  const on = [a, b, c];
  const opts = (name, behaviour = {}) => ({ name, behaviour, inFlight: 2, reconnection: true });
  const honest = [];
  const liars = [];
  for (const [i, server] of on.entries()) {
    honest.push(await startWorker(t, server.url, opts(`honest-${i}`, { delayMs: 20 })));
    liars.push(await startWorker(t, server.url, opts(`liar-${i}`, { lie: ["perturb", "zeros", "shape"][i] })));
  }
  const silent = await startWorker(t, c.url, opts("silent", { holdAll: true }));
  // A worker that takes a task and leaves, over and over, on each instance in turn.
  const quitter = startQuitter(() => on.map((server) => server.url));
  while ((await api(a.url, `/api/jobs/${job.id}`)).json.tasks_done < 130) await sleep(50);
  b.proc.kill("SIGKILL");
  await b.exited;
  on[1] = b = await start("b", b.port);
  const done = await waitForJob(a.url, job.id, { ms: 90000 });
  await quitter.stop();
  assert.equal(done.tasks_done, 400);
  assertClose((await downloadNpy(b.url, job.id)).data, job.want, job.k);
  for (const liar of liars) await until(() => liar.stats.quarantined, `${liar.workerId} quarantined`, 10000);
  // Standing lives in the database: every instance sees the same records.
  for (const server of on) {
    const workers = (await api(server.url, "/api/workers")).json;
    for (const w of workers) {
      const liar = w.name.startsWith("liar");
      assert.equal(w.reputation.quarantined, liar, `${w.name} on ${server.url}: ${JSON.stringify(w.reputation)}`);
      if (w.name.startsWith("honest")) assert.equal(w.reputation.refused, 0);
    }
  }
  assert.ok(silent.stats.assigned > 0, "the silent worker was given tasks, which went to others");
  assert.ok(honest.every((h) => h.stats.accepted > 0), "every instance's honest worker contributed");
});
