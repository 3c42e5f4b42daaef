// Operating the server: metrics, graceful shutdown, online backup, retention.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, openSync, closeSync, fstatSync, readdirSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import {
  ON_POSTGRES, SERVER_BIN, api, assertClose, downloadNpy, npyDecode, referenceProduct, once, randomMatrix, registered, rowsOf,
  startServer, startWorker, tempDir, waitForJob, submitRandom,
} from "./helpers.mjs";

const run = promisify(execFile);

/** Parses the Prometheus text format strictly enough to catch a malformed line. */
function parseMetrics(text) {
  const samples = new Map();
  const types = new Map();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = line.match(/^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/);
    if (meta) {
      if (meta[1] === "TYPE") {
        assert.match(meta[3], /^(counter|gauge|histogram|summary|untyped)$/, line);
        types.set(meta[2], meta[3]);
      }
      continue;
    }
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*)?\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/);
    assert.ok(m, `malformed metrics line: ${line}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, "");
    assert.ok(types.has(m[1]) || types.has(family), `sample before its TYPE: ${line}`);
    samples.set(m[1] + (m[2] ?? ""), Number(m[5]));
  }
  return { samples, types };
}

test("/metrics scrapes cleanly and counts what happened", async (t) => {
  const server = await startServer(t);
  const job = await submitRandom(server.url, 12, 5, 12, 4);
  await startWorker(t, server.url);
  await waitForJob(server.url, job.id);
  await api(server.url, "/api/status");
  const res = await api(server.url, "/metrics", { raw: true });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/plain; version=0.0.4/);
  const { samples, types } = parseMetrics(await res.text());
  assert.equal(samples.get("brain_workers_online"), 1);
  assert.equal(samples.get('brain_tasks{state="done"}'), 9);
  assert.equal(samples.get("brain_tasks_completed_total"), 9);
  assert.equal(samples.get("brain_results_refused_total"), 0);
  assert.ok(samples.get("brain_bytes_sent_total") > 0);
  assert.equal(samples.get("brain_bytes_received_total"), 12 * 12 * 4);
  assert.equal(samples.get("brain_job_duration_seconds_count"), 1);
  assert.ok(samples.get("brain_verification_seconds_total") > 0);
  assert.equal(types.get("brain_http_request_duration_seconds"), "histogram");
  assert.equal(samples.get('brain_http_request_duration_seconds_count{method="POST",route="/api/jobs",status="201"}'), 1);
  for (const name of ["brain_re_leases_total", "brain_duplicates_total", 'brain_jobs{state="done"}'])
    assert.ok(samples.has(name), name);
});

test("SIGTERM: workers are told, the process exits cleanly, and a restart loses nothing", async (t) => {
  const first = await startServer(t, { env: { RUST_LOG: "info" } });
  const job = await submitRandom(first.url, 40, 8, 40, 4, 3);
  const holder = await registered(t, first.url, { name: "holder" });
  const assigned = once(holder.socket, "task_assigned");
  holder.socket.emit("request_task");
  await assigned;
  const worker = await startWorker(t, first.url, { name: "busy", inFlight: 1, behaviour: { delayMs: 20 } });
  while (worker.stats.accepted < 5) await new Promise((r) => setTimeout(r, 20));
  const told = once(holder.socket, "server_shutdown", 5000);
  first.proc.kill("SIGTERM");
  await told;
  const { code } = await first.exited;
  assert.equal(code, 0, first.stderr());
  assert.ok(existsSync(join(dirname(first.dbPath), "jobs", ".clean")), "a clean stop leaves its mark");
  const accepted = worker.stats.accepted;

  const second = await startServer(t, { dbPath: first.dbPath });
  const resumed = (await api(second.url, `/api/jobs/${job.id}`)).json;
  assert.ok(resumed.tasks_done >= accepted, `${resumed.tasks_done} >= ${accepted}`);
  const status = (await api(second.url, "/api/status")).json;
  assert.equal(status.tasks.leased, 0);
  await startWorker(t, second.url, { name: "after" });
  await waitForJob(second.url, job.id);
  assertClose((await downloadNpy(second.url, job.id)).data, job.want, job.k);
});

test("a machine crash that loses written tiles: they are found at the next start and computed again", async (t) => {
  const first = await startServer(t);
  const job = await submitRandom(first.url, 40, 8, 40, 4, 4);
  const worker = await startWorker(t, first.url, { name: "before", inFlight: 1, behaviour: { delayMs: 20 } });
  while (worker.stats.accepted < 10) await new Promise((r) => setTimeout(r, 20));
  first.proc.kill("SIGKILL");
  await first.exited;
  assert.ok(!existsSync(join(dirname(first.dbPath), "jobs", ".clean")), "no mark without a clean stop");
  if (ON_POSTGRES) {
    // There the tiles are committed in the database with their tasks (docs/storage.md):
    // nothing done can be lost, and there is nothing to check at the next start.
    const second = await startServer(t, { dbPath: first.dbPath });
    const resumed = (await api(second.url, `/api/jobs/${job.id}`)).json;
    assert.ok(resumed.tasks_done >= 10, `every acknowledged tile is still done (${resumed.tasks_done})`);
    assert.doesNotMatch(second.log(), /re-queued tiles lost/);
    await startWorker(t, second.url, { name: "after" });
    await waitForJob(second.url, job.id);
    assertClose((await downloadNpy(second.url, job.id)).data, job.want, job.k);
    return;
  }
  // The process died, so the kernel still had the tiles; a crash of the machine would have
  // lost the ones not yet written back. Lose them all, as the page cache would.
  const c = openSync(join(dirname(first.dbPath), "jobs", job.id, "c.npy"), "r+");
  writeSync(c, Buffer.alloc(fstatSync(c).size - 128), 0, undefined, 128);
  closeSync(c);

  const second = await startServer(t, { dbPath: first.dbPath });
  assert.match(second.log(), /re-queued tiles lost in an unclean stop/);
  const resumed = (await api(second.url, `/api/jobs/${job.id}`)).json;
  assert.equal(resumed.tasks_done, 0, "every done tile was lost, and is queued again");
  await startWorker(t, second.url, { name: "after" });
  await waitForJob(second.url, job.id);
  assertClose((await downloadNpy(second.url, job.id)).data, job.want, job.k);
});

test("an online backup taken while serving opens as a working database", async (t) => {
  const server = await startServer(t);
  const job = await submitRandom(server.url, 6, 3, 6, 3, 5);
  await startWorker(t, server.url);
  await waitForJob(server.url, job.id);
  const dest = join(tempDir(t), "backup.db");
  if (ON_POSTGRES) {
    // PostgreSQL is backed up by its own tools; the command says so rather than copy a file.
    const env = { ...process.env, DATABASE_URL: server.databaseUrl };
    await assert.rejects(run(SERVER_BIN, ["backup", dest], { env }), /PostgreSQL.*pg_dump/);
    assert.ok(!existsSync(dest));
    return;
  }
  const { stdout } = await run(SERVER_BIN, ["backup", dest], { env: { ...process.env, DATABASE_PATH: server.dbPath } });
  assert.match(stdout, /backed up/);
  await assert.rejects(run(SERVER_BIN, ["backup", dest], { env: { ...process.env, DATABASE_PATH: server.dbPath } }), /exists/);
  const restored = await startServer(t, { dbPath: dest });
  assertClose((await downloadNpy(restored.url, job.id)).data, job.want, job.k);
});

test("retention removes a finished job's inputs and results after the configured time", async (t) => {
  const server = await startServer(t, { env: { RETENTION_HOURS: "0.0003" } }); // about a second
  const job = await submitRandom(server.url, 4, 4, 4, 2, 7);
  await startWorker(t, server.url);
  await waitForJob(server.url, job.id);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
  let res;
  const deadline = Date.now() + 10000;
  do {
    await new Promise((r) => setTimeout(r, 200));
    res = await api(server.url, `/api/jobs/${job.id}/result`);
  } while (res.status === 200 && Date.now() < deadline);
  assert.equal(res.status, 410);
  assert.match(res.json.error, /retention/);
  assert.equal((await api(server.url, `/api/jobs/${job.id}`)).json.status, "done", "the job stays listed");
  assert.ok(!existsSync(join(dirname(server.dbPath), "jobs", job.id)), "its folder in DATA_DIR is gone");
});

test("a download under way when retention purges the job still gets the whole result", async (t) => {
  // 2048 × 2048 f64: 32 MiB, more than the sockets between server and client hold, so most of
  // it is read from storage after the purge. On PostgreSQL the tiles are in the database, and
  // the download's lease keeps them there.
  const server = await startServer(t, { env: { RETENTION_HOURS: "0.0006" } }); // about 2 s
  const job = await submitRandom(server.url, 2048, 2, 2048, 256, 11);
  await startWorker(t, server.url);
  await waitForJob(server.url, job.id, { ms: 60000 });
  const res = await api(server.url, `/api/jobs/${job.id}/result`, { raw: true });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const parts = [(await reader.read()).value];
  // The reader pauses; the job is purged meanwhile, and no new download starts...
  const first = () => api(server.url, `/api/jobs/${job.id}/result`, { headers: { range: "bytes=0-0" } });
  let again;
  for (const end = Date.now() + 10000; (again = await first()).status === 206 && Date.now() < end; )
    await new Promise((r) => setTimeout(r, 100));
  assert.equal(again.status, 410);
  await new Promise((r) => setTimeout(r, 600)); // a few more sweeps
  // ...but the one under way reads on to the end.
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
  }
  assertClose(npyDecode(Buffer.concat(parts)).data, job.want, job.k);
});

test("a job's files take its inputs while it runs, its result once done, nothing once cancelled", async (t) => {
  const server = await startServer(t);
  const folder = (id) => join(dirname(server.dbPath), "jobs", id);
  const job = await submitRandom(server.url, 4, 4, 4, 2, 8);
  // On PostgreSQL the result is in the database, and the folder is the instance's copy of the
  // inputs (docs/storage.md).
  const result = ON_POSTGRES ? [] : ["c.npy"];
  assert.deepEqual(readdirSync(folder(job.id)).sort(), ["a.npy", "b.npy", ...result]);
  await startWorker(t, server.url);
  await waitForJob(server.url, job.id);
  // Removed just after the job is marked done.
  const files = () => (existsSync(folder(job.id)) ? readdirSync(folder(job.id)) : []);
  for (const end = Date.now() + 5000; files().length > result.length && Date.now() < end; )
    await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(files(), result, "a done job's inputs are removed");
  const cancelled = await submitRandom(server.url, 4, 4, 4, 2, 9);
  const res = await api(server.url, `/api/jobs/${cancelled.id}`, { method: "DELETE" });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  assert.ok(!existsSync(folder(cancelled.id)), "a cancelled job's folder is removed");
});

test("a bad configuration stops start-up with a message naming the variable", async () => {
  await assert.rejects(
    run(SERVER_BIN, [], { env: { ...process.env, PORT: "not-a-port", DATABASE_PATH: "/tmp/unused.db" } }),
    (e) => e.code === 2 && /PORT/.test(e.stderr),
  );
  await assert.rejects(
    run(SERVER_BIN, [], { env: { ...process.env, APP_ENV: "production", API_TOKEN: "", DATABASE_PATH: "/tmp/unused.db" } }),
    (e) => /API_TOKEN/.test(e.stderr),
  );
});

test("CORS follows ALLOWED_ORIGINS exactly", async (t) => {
  const server = await startServer(t, { env: { ALLOWED_ORIGINS: "https://volunteers.example.org" } });
  const preflight = (origin) =>
    fetch(`${server.url}/api/jobs`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
  const allowed = await preflight("https://volunteers.example.org");
  assert.equal(allowed.headers.get("access-control-allow-origin"), "https://volunteers.example.org");
  const other = await preflight("https://evil.example.com");
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  const get = await fetch(`${server.url}/api/status`, { headers: { origin: "https://evil.example.com" } });
  assert.equal(get.headers.get("access-control-allow-origin"), null);

  const open = await startServer(t);
  const any = await fetch(`${open.url}/api/status`, { headers: { origin: "https://anyone.example" } });
  assert.equal(any.headers.get("access-control-allow-origin"), "*", "the default is *, as the ancestor's");
});
