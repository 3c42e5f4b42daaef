#!/usr/bin/env node
// The load harness (`make bench-grid`): starts the server for each run on 127.0.0.1 with a
// temporary database, opens Socket.io volunteers with the official client, and prints the
// grid's four figures with their targets and anchors beside them. Every job it runs is checked
// against a product computed here, independently of the server; it asserts no timings.
//
//   node load.mjs [throughput|connections|efficiency|bytes|all]... [--compute none|wasm] [--quick]
//                 [--tile N] [--in-flight N]      (efficiency: tile width, tasks per volunteer)
//   node load.mjs [scaleout|scaleout-throughput|scaleout-connections]... [--quick] [--rounds N]
//                 [--pg-commit on|off] [--pg-statements] [--ways sqlite,pg1,pg2]
//   node load.mjs network [--profiles campus,home,mobile] [--quick] [--size N] [--tile N]
//                 [--volunteers N] [--cache-mib N] [--in-flight N|auto] [--deadline S]
//                 [--stagger S]  (all volunteers but one arrive after the job, S seconds apart)
//                 [--k K] [--k-split N|auto]  (an N×K·K×N job, k in N slices or the server's
//                 choice; default K = N, whole)
//                 figure 5 (#14): the same job on unshaped loopback, then with every volunteer
//                 behind its own brain-shaper with each profile; delivered GFLOP/s beside the
//                 bound from the kernels' speed, the links and the I/O lower bound
//   node load.mjs egress [--egress-mbit 100] [--mix campus:1,home:7] [--size N] [--tile N]
//                 (root) the server in a network namespace of its own whose egress `tbf` holds
//                 to --egress-mbit, volunteers of mixed links behind their shapers: how the
//                 server's egress is shared among them while all are downloading
//   LOAD_TRACE=1  prints every volunteer's events, and the efficiency run's time window on
//                 CLOCK_MONOTONIC for `perf report --time` against `perf record -k mono`
//   LOAD_PG_SETTINGS='{"log_min_duration_statement": 0}'  more settings for the scale-out
//                 runs' PostgreSQL (a profile); LOAD_PG_LOG=FILE copies its log there at the end
//
// Compute: `none` answers each task with a plain JavaScript loop (instant for the tiny tiles of
// the throughput run, to load the scheduler alone); `wasm` runs the real worker-wasm module
// (worker-wasm/pkg-simd, the page's build) in one Node worker thread per volunteer, so the
// sockets' event loop never waits on a kernel. Bounded: every wait has a deadline, and
// `--quick` shrinks every run to a few seconds (the test suite runs it that way).
//
// Scale-out (#18; `all` leaves it out, `make bench-grid` asks for it): a private PostgreSQL
// and Redis (tests/support), started here on ephemeral ports and stopped at the end.
//   scaleout-throughput   figure 1 three ways, alternated `--rounds` times (3; 1 with --quick):
//                         SQLite, PostgreSQL with one instance, PostgreSQL with two instances
//                         sharing one database (volunteers alternate between them, the job is
//                         submitted to the first, its product downloaded from the last). Each
//                         way: completions/s, the instances' CPU and PostgreSQL's (the
//                         postmaster and its children) per 1,000 tasks, the ratios to the targets.
//                         PostgreSQL keeps its durable defaults (fsync on; `--pg-commit off`
//                         turns synchronous_commit off, the nearest to SQLite's WAL at
//                         synchronous = NORMAL, which the server uses).
//   scaleout-connections  figure 2 with the volunteers alternating between two instances on one
//                         PostgreSQL and one Redis: heartbeat round trips, each instance's RSS,
//                         and the CPU per heartbeat of the instances, PostgreSQL and Redis.
//   scaleout              both.
//   --pg-statements       (a profile) PostgreSQL's statements by time in each way's last
//                         round, with calls per 1,000 tasks (pg_stat_statements).
//   --ways                (a profile) some of the three ways only, e.g. `--ways pg1` under
//                         `perf record`.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { checkProduct } from "../support/matrix.mjs";
import { api, connect, metric, referenceProduct, npyEncode, once, randomMatrix, rowsOf, startServer, toBytes, waitForJob, fromBytes, downloadNpy } from "./helpers.mjs";
import { createDatabase, psql, startPostgres } from "../support/postgres.mjs";
import { startRedis } from "../support/redis.mjs";
import { startShaper } from "../support/shaper.mjs";
import { spawnServer } from "../support/server.mjs";
import { depthFor, nextPeak } from "../../web/src/volunteer/pipeline.js";

const here = dirname(fileURLToPath(import.meta.url));
const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    compute: { type: "string" },
    quick: { type: "boolean", default: false },
    pkg: { type: "string", default: resolve(here, "../../worker-wasm/pkg-simd") },
    tile: { type: "string" },
    "in-flight": { type: "string" },
    rounds: { type: "string" },
    "pg-commit": { type: "string", default: "on" },
    "pg-statements": { type: "boolean", default: false },
    ways: { type: "string", default: "sqlite,pg1,pg2" },
    profiles: { type: "string", default: "campus,home,mobile" },
    size: { type: "string" },
    volunteers: { type: "string" },
    "cache-mib": { type: "string" },
    deadline: { type: "string" },
    "egress-mbit": { type: "string" },
    stagger: { type: "string" },
    mix: { type: "string" },
    k: { type: "string" },
    "k-split": { type: "string" },
  },
});
const QUICK = opts.quick;
const GROUPS = {
  all: ["throughput", "connections", "efficiency", "bytes"],
  scaleout: ["scaleout-throughput", "scaleout-connections"],
};
const RUNS = [...GROUPS.all, ...GROUPS.scaleout, "network", "egress"];
const runs = [...new Set((positionals.length === 0 ? ["all"] : positionals).flatMap((r) => GROUPS[r] ?? [r]))];
for (const r of runs) if (!RUNS.includes(r)) throw new Error(`unknown run ${r}`);
if (!["on", "off"].includes(opts["pg-commit"])) throw new Error(`--pg-commit on|off, not ${opts["pg-commit"]}`);

// --- measurements ---------------------------------------------------------------------------

const quantile = (xs, q) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const fmt = (x, d = 0) => x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });

/** The server process's CPU time (user + system), in seconds, from /proc. */
const cpuSeconds = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
};
/** This process's main thread's CPU time (the sockets' event loop, without the compute threads), in seconds. */
const threadCpuSeconds = () => cpuSeconds(`${process.pid}/task/${process.pid}`);
/** The server process's resident memory, in MiB. */
const rssMiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]) / 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The processes whose parent is `ppid`: pid, name, and their /proc stat fields after the name. */
function children(ppid) {
  const found = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const end = stat.lastIndexOf(") ");
      const fields = stat.slice(end + 2).split(" ");
      if (Number(fields[1]) === ppid) found.push({ pid: Number(entry), name: stat.slice(stat.indexOf("(") + 1, end), fields });
    } catch {
      // Exited between the listing and the read.
    }
  }
  return found;
}

/**
 * The CPU time of a process and of its children, in seconds: its own, its reaped children's,
 * and its live children's (PostgreSQL: the postmaster, its backends and helpers). A backend
 * that exits during a run moves its time into the postmaster's reaped children's, so a
 * difference over the run counts it either way.
 */
function treeCpuSeconds(pid) {
  const ticks = (f) => Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const own = ticks(stat.slice(stat.lastIndexOf(") ") + 2).split(" "));
  return (own + children(pid).reduce((sum, c) => sum + ticks(c.fields), 0)) / 100;
}

/**
 * The pid of the redis-server this process started on `port` (tests/support/redis.mjs), which
 * names itself `redis-server 127.0.0.1:PORT` once running.
 */
function redisPid(port) {
  const found = children(process.pid).find(
    (c) => c.name === "redis-server" && readFileSync(`/proc/${c.pid}/cmdline`, "utf8").split("\0")[0].endsWith(`:${port}`),
  );
  if (!found) throw new Error(`no redis-server on port ${port} among this process's children`);
  return found.pid;
}

/** PostgreSQL's durable defaults, as a managed PostgreSQL runs, over the tests' fast settings. */
const PG_SETTINGS = {
  fsync: "on", full_page_writes: "on", synchronous_commit: opts["pg-commit"],
  ...(opts["pg-statements"] && {
    shared_preload_libraries: "pg_stat_statements",
    "pg_stat_statements.track": "all",
    "pg_stat_statements.track_planning": "on",
  }),
  ...JSON.parse(process.env.LOAD_PG_SETTINGS ?? "{}"),
};

/** The private PostgreSQL of the scale-out runs: started once (initdb takes seconds), stopped at the end. */
let postgres;
const privatePostgres = () => (postgres ??= startPostgres({ settings: PG_SETTINGS }));

// --- independent checks --------------------------------------------------------------------

/** Straight into a Float32Array: a plain array of millions of numbers would leave the
 * measured run a garbage collector's worth of the harness's own setup to sweep. */
const randomF32 = (len, seed) => randomMatrix(1, len, "f32", seed);

async function submitNpy(url, a, b, m, k, n, tile, name, split) {
  const form = new FormData();
  form.append("a", new Blob([npyEncode("f32", m, k, a)]), "a.npy");
  form.append("b", new Blob([npyEncode("f32", k, n, b)]), "b.npy");
  form.append("tile", String(tile));
  if (split !== undefined) form.append("k_split", String(split));
  form.append("name", name);
  const res = await api(url, "/api/jobs", { method: "POST", body: form });
  if (res.status !== 201) throw new Error(`submit: ${res.status} ${res.text}`);
  return res.json;
}

// --- volunteers -----------------------------------------------------------------------------

/**
 * One volunteer: a Socket.io connection that registers, keeps `inFlight` tasks requested or
 * computing (so the next task is on its way while one computes; "auto": as many as the page
 * would, from its measured round trip over its compute time, web/src/volunteer/pipeline.js's
 * `depthFor`), and answers with `compute`. With a
 * `panelCache` budget it announces the cache and keeps panels by the keys the server gives.
 * With `reconnect` it behaves as the page on a real link: it heartbeats, comes back after a
 * reset with its token, says which panels it still holds (`panel_cache.holds`, least recently
 * used first) and keeps those the server counts on (`registration_ack.panels_kept`), and drops
 * the tasks of the connection that ended rather than answer them on the next.
 */
async function volunteer(url, { name, compute, inFlight = 2, panelCache, reconnect = false }) {
  const stats = {
    accepted: 0, refused: 0, kernelMs: 0, kernelCpuMs: 0, bytesIn: 0, tasks: 0, firstTask: Infinity, lastAck: 0, events: [], arrivals: [],
    flops: 0, lastAccepted: 0, resets: 0, dropped: 0, depth: 0,
  };
  const note = (what) => process.env.LOAD_TRACE && stats.events.push([performance.now(), what]);
  // The panels this volunteer holds, by key: the bytes themselves for `none` compute; for `wasm`
  // the bytes live in the compute thread and this only mirrors its keys (the thread takes
  // messages in order, so it holds a key by the time it reads a task that names it).
  const cache = new Map();
  let thread;
  const pending = new Map();
  let seq = 0;
  if (compute === "wasm") {
    thread = new Worker(resolve(here, "compute-thread.mjs"), { workerData: { pkg: opts.pkg } });
    await new Promise((res, rej) => {
      thread.once("message", res);
      thread.once("error", rej);
    });
    thread.on("message", ({ id, ...done }) => pending.get(id)(done));
  }
  // Connect only once the kernel is ready, so the handlers below see the first `connect`.
  const socket = connect(url, reconnect ? { reconnection: true, reconnectionDelay: 200, reconnectionDelayMax: 1000 } : {});
  // The flops of each task in hand, counted once its result is accepted.
  const flopsOf = new Map();
  let token, beat;
  // Which connection a task came on: a result computed for an ended one is not sent.
  let connection = 0;
  // Requests open (their send times, oldest first: answered in order) and tasks in hand, on
  // this connection; the recent slow round trip and the mean compute time, for "auto".
  let asked = [];
  let inHand = 0;
  let roundTripMs = 0;
  let computeMs = 0;
  const want = () => (inFlight === "auto" ? depthFor(roundTripMs, computeMs) : inFlight);
  const ask = () => {
    asked.push(performance.now());
    socket.emit("request_task");
  };
  const topUp = () => {
    stats.depth = Math.max(stats.depth, want());
    while (asked.length + inHand < want()) ask();
  };
  if (reconnect)
    socket.on("disconnect", () => {
      clearInterval(beat);
      connection++;
      stats.resets++;
      flopsOf.clear();
      asked = [];
      inHand = 0;
    });
  const run = (task, a, b) => {
    if (compute === "wasm")
      return new Promise((res) => {
        const id = seq++;
        pending.set(id, ({ c, ms, cpuMs }) => {
          pending.delete(id);
          res({ c: Buffer.from(c.buffer, c.byteOffset, c.byteLength), ms, cpuMs });
        });
        // Panels that came with the task go to the thread without a copy when they own their
        // whole buffer (socket.io hands each binary attachment over in its own); later tasks
        // name them by key.
        const [ta, tb] = [task.a, task.b].map((x) => x && (x.byteOffset === 0 && x.byteLength === x.buffer.byteLength ? x : new Uint8Array(x)));
        const transfer = new Set([ta, tb].filter(Boolean).map((x) => x.buffer));
        thread.postMessage(
          { id, dtype: task.dtype, m: task.m, k: task.k, n: task.n, a: ta, b: tb, aKey: task.a_key, bKey: task.b_key, keep: Boolean(panelCache), evict: task.evict },
          [...transfer],
        );
      });
    const t0 = performance.now();
    const c = toBytes(task.dtype, referenceProduct(fromBytes(task.dtype, a), fromBytes(task.dtype, b), task.m, task.k, task.n));
    const ms = performance.now() - t0;
    return { c, ms, cpuMs: ms };
  };
  socket.on("connect", () => {
    const info = { name, threads: 1, ...(token && { token }) };
    if (panelCache) info.panel_cache = { budget_bytes: panelCache, holds: [...cache.keys()] };
    socket.emit("register_worker", info);
  });
  socket.on("protocol_error", ({ code, message }) => {
    stats.errors = (stats.errors ?? 0) + 1;
    if (process.env.LOAD_TRACE) console.error(`${name}: protocol_error ${code}: ${message}`);
  });
  socket.on("task_cancelled", () => ask());
  socket.on("registration_ack", (ack) => {
    token = ack.token;
    if (panelCache) {
      // What the server does not count on is dropped: it may send those panels again.
      const kept = new Set(Array.isArray(ack.panels_kept) ? ack.panels_kept : []);
      for (const key of [...cache.keys()]) if (!kept.has(key)) cache.delete(key);
      thread?.postMessage({ keepOnly: [...kept] });
      stats.panelsKept = (stats.panelsKept ?? 0) + kept.size;
    }
    if (reconnect) {
      clearInterval(beat);
      beat = setInterval(() => socket.emit("heartbeat"), ack.heartbeat_interval_ms);
    }
    topUp();
  });
  socket.on("task_assigned", async (task) => {
    roundTripMs = nextPeak(roundTripMs, performance.now() - (asked.shift() ?? NaN));
    inHand++;
    note(`assigned ${task.task_id} a=${task.a?.length ?? 0} b=${task.b?.length ?? 0}`);
    stats.tasks++;
    stats.firstTask = Math.min(stats.firstTask, performance.now());
    stats.bytesIn += (task.a?.length ?? 0) + (task.b?.length ?? 0);
    if (task.a || task.b) stats.arrivals.push([performance.now(), (task.a?.length ?? 0) + (task.b?.length ?? 0)]);
    const [a, b] = [task.a ?? cache.get(task.a_key), task.b ?? cache.get(task.b_key)];
    if (!a || !b) {
      // Sent again in full: that answers this, and is no round trip worth measuring.
      inHand--;
      asked.unshift(NaN);
      return socket.emit("panel_missing", { task_id: task.task_id });
    }
    if (panelCache) {
      // Keys only for `wasm`: the bytes go to the compute thread. Set again when used, so
      // that the map's order is least recently used first.
      for (const [key, bytes] of [[task.a_key, task.a ?? a], [task.b_key, task.b ?? b]]) {
        cache.delete(key);
        cache.set(key, compute === "wasm" ? true : bytes);
      }
      for (const key of task.evict ?? []) cache.delete(key);
    }
    const from = connection;
    flopsOf.set(task.task_id, 2 * task.m * task.k * task.n);
    const { c, ms, cpuMs } = await run(task, a, b);
    note(`computed ${task.task_id} in ${ms.toFixed(1)} ms`);
    // The connection it came on ended: the server put the task back, and the new connection
    // asked for work afresh when it registered.
    if (from !== connection) return stats.dropped++;
    inHand--;
    computeMs = computeMs > 0 ? 0.7 * computeMs + 0.3 * ms : ms;
    stats.kernelMs += ms;
    stats.kernelCpuMs += cpuMs;
    // The next request goes out with the result, not after its ack, as the page does: the
    // server's verification and commit then overlap the next task's transfer and compute.
    // And before the result, as the page does: behind it, it waited for the tile to cross a
    // slow uplink while the downlink idled.
    topUp();
    socket.emit("task_result", { task_id: task.task_id, c, compute_ms: Math.round(ms) });
  });
  socket.on("result_ack", (ack) => {
    note(`ack ${ack.task_id}`);
    if (ack.accepted) {
      stats.accepted++;
      stats.flops += flopsOf.get(ack.task_id) ?? 0;
      stats.lastAccepted = performance.now();
    } else stats.refused++;
    flopsOf.delete(ack.task_id);
    stats.lastAck = performance.now();
  });
  await once(socket, "registration_ack", 30000);
  return {
    stats,
    /**
     * This volunteer's kernel on an m×k·k×n f32 tile with the machine otherwise idle, in ms
     * (median of `reps`); with `forMs`, the mean of as many as fit in that time.
     */
    alone: (m, k, n, reps = 5, forMs = 0) =>
      new Promise((res) => {
        const id = seq++;
        pending.set(id, ({ ms }) => {
          pending.delete(id);
          res(ms);
        });
        thread.postMessage({ id, m, k, n, alone: reps, forMs });
      }),
    /** Starts this volunteer's figures afresh, for the next job. */
    restart() {
      Object.assign(stats, {
        kernelMs: 0, kernelCpuMs: 0, bytesIn: 0, tasks: 0, firstTask: Infinity, lastAck: 0, events: [], arrivals: [], flops: 0, lastAccepted: 0, resets: 0, dropped: 0, depth: 0,
      });
    },
    stop() {
      clearInterval(beat);
      socket.close();
      thread?.terminate();
    },
  };
}

async function withServer(env, fn) {
  return withServers([env], ([server]) => fn(server));
}

/**
 * One server per entry of `envs`, each in a temporary folder of its own; stopped, and their
 * folders removed, when `fn` ends.
 */
async function withServers(envs, fn) {
  const servers = [];
  try {
    // Every simulated volunteer connects from 127.0.0.1: the per-address caps would make them one.
    for (const env of envs)
      servers.push(
        await startServer(null, {
          env: {
            RUST_LOG: "warn", MAX_EVENTS_PER_SEC: "100000", MAX_LEASES_PER_ADDRESS: "1000000",
            MAX_SEND_BYTES_PER_SEC: String(2 ** 40), ...env,
          },
        }),
      );
    return await fn(servers);
  } finally {
    await Promise.all(servers.map((server) => server.kill("SIGTERM")));
    for (const server of servers) rmSync(dirname(server.dbPath), { recursive: true, force: true });
  }
}

// --- 1. scheduler throughput ----------------------------------------------------------------

async function throughput(compute = opts.compute ?? "none") {
  const [W, N] = QUICK ? [10, 30] : [100, 142]; // 142² = 20,164 tasks
  await withServer({ MAX_CONNECTIONS_PER_IP: "100000" }, async (server) => {
    const { tasks, secs, serverCpu } = await throughputJob([server], { compute, W, N });
    console.log(`\n1. scheduler throughput (${compute} compute): ${fmt(tasks)} tasks of 1×1, ${W} workers, ${secs.toFixed(2)} s, product checked`);
    console.log(`   ${fmt(tasks / secs)} verified, committed completions/s   (target ≥ 5,000; Dask ~1,000/s at ~1 ms per task; one BOINC server ~100/s)`);
    console.log(`   server CPU ${fmt((serverCpu * 1e6) / tasks)} µs per task   (the load generator shares this 2-core machine)`);
  });
}

/**
 * One job of N×N tiles of 1×1 on W volunteers that take turns between `servers`: submitted to
 * the first, its product downloaded from the last and checked exactly. Resolves to its tasks,
 * the seconds from submission to done, the CPU seconds over that time of the servers (summed)
 * and of the process tree of `postmaster` (when given), and the results each server stored.
 */
async function throughputJob(servers, { compute, W, N, postmaster }) {
  const vols = [];
  for (let i = 0; i < W; i++) vols.push(await volunteer(servers[i % servers.length].url, { name: `w${i}`, compute, inFlight: 4 }));
  const a = randomMatrix(N, 1, "f64", 1);
  const b = randomMatrix(1, N, "f64", 2);
  const serversCpu = () => servers.reduce((sum, server) => sum + cpuSeconds(server.proc.pid), 0);
  const postgresCpu = () => (postmaster ? treeCpuSeconds(postmaster) : 0);
  const harnessCpu = () => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1e6;
  };
  const [cpu0, pg0, harness0] = [serversCpu(), postgresCpu(), harnessCpu()];
  const t0 = performance.now();
  const res = await api(servers[0].url, "/api/jobs", { method: "POST", body: { a: rowsOf(a, N, 1), b: rowsOf(b, 1, N), tile: 1 } });
  const job = await waitForJob(servers[0].url, res.json.id, { ms: 300000 });
  const secs = (performance.now() - t0) / 1000;
  const [serverCpu, pgCpu, harness] = [serversCpu() - cpu0, postgresCpu() - pg0, harnessCpu() - harness0];
  const got = (await api(servers.at(-1).url, `/api/jobs/${job.id}/result?format=json`)).json.c;
  for (let i = 0; i < N; i++)
    for (let j = 0; j < N; j++)
      if (Math.abs(got[i][j] - Math.fround(a[i]) * Math.fround(b[j])) > 1e-6) throw new Error(`C[${i}][${j}] is wrong`);
  for (const v of vols) v.stop();
  // The results each instance verified and stored, from its own counter (a worker's last acks
  // may still be on their way when the job is done). An instance counts a result just after its
  // commit, so the sum may lag the job's status by a moment.
  let through = [job.tasks_total];
  if (servers.length > 1)
    for (const deadline = Date.now() + 30000; ; await sleep(100)) {
      through = await Promise.all(servers.map((server) => metric(server.url, "brain_tasks_completed_total")));
      if (through.reduce((a, b) => a + b, 0) >= job.tasks_total) break;
      if (Date.now() > deadline) throw new Error(`the instances stored ${through.join(" + ")} results of ${job.tasks_total} tasks`);
    }
  return { tasks: job.tasks_total, secs, serverCpu, pgCpu, harness, through };
}

// --- 1 on PostgreSQL, with one instance and with two ---------------------------------------

/**
 * The folder of a run's instances' DATA_DIRs, one each (`<folder>/<instance>`): on PostgreSQL
 * the jobs' matrices live in the database, and each instance keeps its own copies.
 */
const jobsFolder = () => mkdtempSync(join(tmpdir(), "brain-bench-jobs-"));

async function scaleoutThroughput(compute = opts.compute ?? "none") {
  const [W, N] = QUICK ? [10, 30] : [100, 142];
  const rounds = Number(opts.rounds ?? (QUICK ? 1 : 3));
  if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error(`--rounds: a whole number ≥ 1, not ${opts.rounds}`);
  const chosen = opts.ways.split(",");
  const ways = [
    { key: "sqlite", name: "SQLite", instances: 0 },
    { key: "pg1", name: "PostgreSQL, 1 instance", instances: 1 },
    { key: "pg2", name: "PostgreSQL, 2 instances", instances: 2 },
  ].filter((way) => chosen.includes(way.key));
  if (ways.length !== chosen.length) throw new Error(`--ways: some of sqlite, pg1, pg2, not ${opts.ways}`);
  const results = ways.map(() => []);
  const pg = await privatePostgres();
  const version = (await psql(pg, "postgres", "SHOW server_version")).trim().split(" ")[0];
  const statements = [];
  if (opts["pg-statements"]) await psql(pg, "postgres", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
  // The three ways in turn, so that a slower stretch of this shared machine falls on all.
  for (let round = 0; round < rounds; round++)
    for (const [w, way] of ways.entries()) {
      const database = `bench_throughput_${round}_${way.instances}`;
      const url = way.instances ? await createDatabase(pg, database) : "";
      const jobs = url && jobsFolder();
      // DATABASE_URL and REDIS_URL set, empty for SQLite, so that the shell's never leak in.
      const envs = Array.from({ length: Math.max(1, way.instances) }, (_, i) => ({
        MAX_CONNECTIONS_PER_IP: "100000", DATABASE_URL: url, REDIS_URL: "",
        ...(url && { INSTANCE_ID: `bench-${"ab"[i]}`, DATA_DIR: join(jobs, "ab"[i]) }),
      }));
      const postmaster = way.instances ? pg.pid : undefined;
      const profile = url && opts["pg-statements"] && round === rounds - 1;
      try {
        results[w].push(
          await withServers(envs, async (servers) => {
            if (profile) await psql(pg, "postgres", "SELECT pg_stat_statements_reset()");
            const run = await throughputJob(servers, { compute, W, N, postmaster });
            if (profile) statements.push([way.name, run.tasks, await topStatements(pg, database)]);
            return run;
          }),
        );
      } finally {
        if (jobs) rmSync(jobs, { recursive: true, force: true });
      }
      if (url) await psql(pg, "postgres", `DROP DATABASE ${database} WITH (FORCE)`);
    }
  const tasks = results[0][0].tasks;
  const rates = results.map((runs) => runs.map((r) => r.tasks / r.secs));
  const median = rates.map((r) => quantile(r, 0.5));
  // CPU per 1,000 tasks over all rounds together: a few ticks' rounding per run weighs less.
  const per1000 = (runs, key) => (1000 * runs.reduce((s, r) => s + r[key], 0)) / runs.reduce((s, r) => s + r.tasks, 0);
  const through = (runs) => runs.reduce((sum, r) => sum.map((x, i) => x + r.through[i]), [0, 0]);
  console.log(
    `\n1. scheduler throughput on SQLite and PostgreSQL (${compute} compute): ${fmt(tasks)} tasks of 1×1, ${W} workers, ` +
      `${rounds} round${rounds > 1 ? "s" : ""} of ${ways.length === 3 ? "the three ways in turn" : ways.map((w) => w.key).join(" and ")}, every product checked`,
  );
  console.log(
    `   PostgreSQL ${version}, private, fsync on, synchronous_commit ${opts["pg-commit"]}; SQLite in WAL, synchronous = NORMAL; ` +
      `two instances: workers alternate between them, the job submitted to one; no Redis (no dashboards here)`,
  );
  for (const [w, way] of ways.entries()) {
    const pgCpu = way.instances ? `, PostgreSQL ${per1000(results[w], "pgCpu").toFixed(3)} s` : "";
    const split = way.instances === 2 ? `; results stored by each instance ${through(results[w]).map((x) => fmt(x)).join(" + ")}` : "";
    console.log(
      `   ${(way.name + ":").padEnd(24)} ${fmt(median[w]).padStart(6)} verified, committed completions/s` +
        `${rounds > 1 ? ` (median of ${rates[w].map((r) => fmt(r)).join(", ")})` : ""}; ` +
        `CPU per 1,000 tasks: server${way.instances === 2 ? "s" : ""} ${per1000(results[w], "serverCpu").toFixed(3)} s${pgCpu}${split}`,
    );
  }
  const busy = (runs) => runs.reduce((s, r) => s + r.serverCpu + r.pgCpu + r.harness, 0) / runs.reduce((s, r) => s + r.secs, 0);
  console.log(
    `   the harness's CPU per 1,000 tasks: ${ways.map((way, w) => `${way.name} ${per1000(results[w], "harness").toFixed(3)} s`).join(", ")}; ` +
      `cores busy with the servers, PostgreSQL and the harness: ${ways.map((_, w) => busy(results[w]).toFixed(2)).join(", ")} of 2`,
  );
  const rate = Object.fromEntries(ways.map((way, w) => [way.key, median[w]]));
  if (rate.sqlite && rate.pg1) console.log(`   PostgreSQL with one instance / SQLite: ${((100 * rate.pg1) / rate.sqlite).toFixed(0)} %   (target ≥ 80 %)`);
  if (rate.pg1 && rate.pg2) console.log(`   PostgreSQL with two instances / with one: ${((100 * rate.pg2) / rate.pg1).toFixed(0)} %   (target ≥ 100 %)`);
  console.log(
    `   anchors for a PostgreSQL-backed queue: awa (Rust, sqlx) ~14,000 jobs/s on 4 CPUs; River ~46,000 on 8; ` +
      `here the instances, PostgreSQL and the ${W} volunteers' one Node process share 2 cores`,
  );
  for (const [name, tasks, rows] of statements) {
    console.log(`   ${name}, its last round: PostgreSQL's statements by execution time (pg_stat_statements)`);
    console.log(`     ${"calls/1,000 tasks".padStart(17)} ${"mean µs".padStart(8)} ${"total ms".padStart(9)} ${"planning ms".padStart(11)}  statement`);
    for (const [calls, total, plan, query] of rows)
      console.log(
        `     ${fmt((1000 * calls) / tasks, 1).padStart(17)} ${fmt((1000 * total) / calls, 1).padStart(8)} ${fmt(total).padStart(9)} ${fmt(plan).padStart(11)}  ${query}`,
      );
  }
}

/**
 * The statements run on `database` since the last reset, by execution time: [calls, total ms,
 * text]. The forms of one statement for lists of different lengths (`ARRAY[$1, …, $n]`) are
 * counted as one; the first row is every statement together.
 */
async function topStatements(pg, database) {
  const form =
    "left(regexp_replace(regexp_replace(regexp_replace(query, '\\s+', ' ', 'g'), " +
    "'(CAST\\(\\$\\d+ AS [A-Z ]+\\)(, )?)+', 'CAST($… AS …)', 'g'), '(\\$\\d+(, )?)+', '$…', 'g'), 160)";
  const out = await psql(
    pg,
    "postgres",
    `WITH s AS (SELECT calls, total_exec_time, total_plan_time, ${form} AS form FROM pg_stat_statements ` +
      `WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '${database}')) ` +
      `(SELECT SUM(calls), SUM(total_exec_time), SUM(total_plan_time), '(every statement)' FROM s) UNION ALL ` +
      `(SELECT SUM(calls), SUM(total_exec_time), SUM(total_plan_time), form FROM s GROUP BY form ORDER BY 2 DESC LIMIT 15)`,
  );
  return out.trim().split("\n").filter(Boolean).map((line) => {
    const [calls, total, plan, ...query] = line.split("|");
    return [Number(calls), Number(total), Number(plan), query.join("|")];
  });
}

// --- 2. connections -------------------------------------------------------------------------

async function connections() {
  // Heartbeats every 2 s (LEASE_MS / 3), five times the default rate, to load the server.
  await withServer({ MAX_CONNECTIONS_PER_IP: "100000", LEASE_MS: "6000" }, async (server) => {
    const r = await connectionsRun([server]);
    const [rss0, rssPeak, rssEnd] = [r.rss0[0], r.rssPeak[0], r.rssEnd[0]];
    const rtts = r.rtts.flat();
    const { N, wave, waves, http } = r;
    console.log(`\n2. connections: ${fmt(N)} registered workers heartbeating every 2 s, then ${waves} waves of ${fmt(wave)} leaving and ${fmt(wave)} joining`);
    console.log(`   connected and registered in ${r.connectSecs.toFixed(1)} s; the server counted ${fmt(N)} online before and after the waves`);
    console.log(`   server RSS ${fmt(rss0)} MiB idle, ${fmt(rssPeak)} MiB with ${fmt(N)} connected, ${fmt(rssEnd)} MiB after the waves (${fmt(((rssPeak - rss0) * 1024) / N, 1)} KiB per connection)`);
    console.log(`   heartbeat round trip over ${fmt(rtts.length)} beats (${fmt(r.steadyRtts)} steady): p50 ${quantile(rtts, 0.5).toFixed(1)} ms, p99 ${quantile(rtts, 0.99).toFixed(1)} ms, max ${Math.max(...rtts).toFixed(1)} ms`);
    console.log(`   HTTP /health and /api/status during it all (${http.length} requests): p50 ${quantile(http, 0.5).toFixed(1)} ms, p99 ${quantile(http, 0.99).toFixed(1)} ms, max ${Math.max(...http).toFixed(1)} ms   (target: 5,000 connected, responsive)`);
  });
}

/**
 * The connections run on `servers`: the workers take turns between them, and the HTTP probe
 * too. Resolves to per-server RSS (idle, peak, end) and heartbeat round trips, the HTTP
 * timings, and the CPU seconds, over the steady phase, of each server, of the process tree of
 * `postmaster` and of the process `redis` (when given), with the heartbeats sent meanwhile.
 */
async function connectionsRun(servers, { postmaster, redis } = {}) {
  const [N, wave, waves, steadyMs] = QUICK ? [200, 50, 2, 2000] : [5000, 1000, 3, 20000];
  const pids = servers.map((server) => server.proc.pid);
  const rss0 = pids.map(rssMiB);
  const rtts = servers.map(() => []);
  const http = [];
  let probing = true;
  const prober = (async () => {
    for (let i = 0; probing; i++) {
      const t0 = performance.now();
      const res = await api(servers[Math.floor(i / 2) % servers.length].url, i % 2 ? "/api/status" : "/health");
      if (res.status !== 200) throw new Error(`HTTP ${res.status} while under load`);
      http.push(performance.now() - t0);
      await sleep(100);
    }
  })();
  let live = new Set();
  let beats = 0;
  const open = async (i) => {
    const at = i % servers.length;
    const socket = connect(servers[at].url);
    let beat, sentAt = 0;
    socket.on("heartbeat_ack", () => {
      if (sentAt) rtts[at].push(performance.now() - sentAt);
      sentAt = 0;
    });
    const acked = once(socket, "registration_ack", 60000);
    socket.emit("register_worker", { name: `c${i}`, threads: 1 });
    const ack = await acked;
    // Start each heartbeat clock at a random phase, as real volunteers would be.
    const interval = ack.heartbeat_interval_ms;
    const first = setTimeout(() => {
      beat = setInterval(() => {
        sentAt = performance.now();
        beats++;
        socket.emit("heartbeat");
      }, interval);
    }, Math.random() * interval);
    const conn = { socket, close: () => (clearTimeout(first), clearInterval(beat), socket.close()) };
    live.add(conn);
    return conn;
  };
  const openMany = async (count, from) => {
    const batch = 250;
    for (let i = 0; i < count; i += batch)
      await Promise.all(Array.from({ length: Math.min(batch, count - i) }, (_, j) => open(from + i + j)));
  };
  const online = async (server) => (await api(server.url, "/api/status")).json.workers_online;
  // One server counts its own at once; instances sharing a database learn the others' counts
  // within a second or two (their instances table), so those are asked until they agree.
  const countsAll = async (what) => {
    if (servers.length === 1) {
      const n = await online(servers[0]);
      if (n !== N) throw new Error(what(n));
      return;
    }
    const deadline = Date.now() + 30000;
    for (;;) {
      const counts = await Promise.all(servers.map(online));
      if (counts.every((n) => n === N)) return;
      if (Date.now() > deadline) throw new Error(what(counts.join(" and ")));
      await sleep(250);
    }
  };
  const t0 = performance.now();
  await openMany(N, 0);
  const connectSecs = (performance.now() - t0) / 1000;
  await sleep(500);
  await countsAll((n) => `server counts ${n} workers online, not ${N}`);
  const cpu = () => ({
    servers: pids.map(cpuSeconds),
    postgres: postmaster ? treeCpuSeconds(postmaster) : 0,
    redis: redis ? cpuSeconds(redis) : 0,
    beats,
  });
  const before = cpu();
  await sleep(steadyMs);
  const after = cpu();
  const steady = {
    servers: after.servers.map((x, i) => x - before.servers[i]),
    postgres: after.postgres - before.postgres,
    redis: after.redis - before.redis,
    beats: after.beats - before.beats,
  };
  const rssPeak = pids.map(rssMiB);
  const steadyRtts = rtts.flat().length;
  let next = N;
  for (let w = 0; w < waves; w++) {
    const leaving = [...live].slice(0, wave);
    for (const c of leaving) {
      c.close();
      live.delete(c);
    }
    await openMany(wave, next);
    next += wave;
    await sleep(1000);
  }
  await sleep(1000);
  await countsAll((n) => `after ${waves} waves the server counts ${n} workers online, not ${N}`);
  probing = false;
  await prober;
  const rssEnd = pids.map(rssMiB);
  for (const c of live) c.close();
  return { N, wave, waves, steadyMs, connectSecs, rss0, rssPeak, rssEnd, rtts, steadyRtts, http, steady };
}

// --- 2 over two instances on PostgreSQL and Redis ------------------------------------------

async function scaleoutConnections() {
  const [pg, redis] = await Promise.all([privatePostgres(), startRedis()]);
  try {
    const url = await createDatabase(pg, "bench_connections");
    const jobs = jobsFolder();
    const envs = ["a", "b"].map((id) => ({
      MAX_CONNECTIONS_PER_IP: "100000", LEASE_MS: "6000", DATABASE_URL: url, REDIS_URL: redis.url, INSTANCE_ID: `bench-${id}`, DATA_DIR: join(jobs, id),
    }));
    let r;
    try {
      r = await withServers(envs, (servers) => connectionsRun(servers, { postmaster: pg.pid, redis: redisPid(redis.port) }));
    } finally {
      rmSync(jobs, { recursive: true, force: true });
    }
    const { N, wave, waves, http, steady } = r;
    const rtts = r.rtts.flat();
    const each = N / 2;
    console.log(
      `\n2. connections over two instances on one PostgreSQL and one Redis: ${fmt(N)} registered workers (${fmt(each)} on each) ` +
        `heartbeating every 2 s, then ${waves} waves of ${fmt(wave)} leaving and ${fmt(wave)} joining`,
    );
    console.log(`   connected and registered in ${r.connectSecs.toFixed(1)} s; each instance counted ${fmt(N)} online (the whole grid) before and after the waves`);
    for (const [i, id] of ["a", "b"].entries())
      console.log(
        `   instance ${id} RSS ${fmt(r.rss0[i])} MiB idle, ${fmt(r.rssPeak[i])} MiB with ${fmt(each)} connected, ${fmt(r.rssEnd[i])} MiB after the waves ` +
          `(${fmt(((r.rssPeak[i] - r.rss0[i]) * 1024) / each, 1)} KiB per connection); heartbeat p99 ${quantile(r.rtts[i], 0.99).toFixed(1)} ms`,
      );
    console.log(`   heartbeat round trip over ${fmt(rtts.length)} beats (${fmt(r.steadyRtts)} steady): p50 ${quantile(rtts, 0.5).toFixed(1)} ms, p99 ${quantile(rtts, 0.99).toFixed(1)} ms, max ${Math.max(...rtts).toFixed(1)} ms`);
    console.log(`   HTTP /health and /api/status of both during it all (${http.length} requests): p50 ${quantile(http, 0.5).toFixed(1)} ms, p99 ${quantile(http, 0.99).toFixed(1)} ms, max ${Math.max(...http).toFixed(1)} ms   (target: 5,000 connected, responsive)`);
    const perBeat = (secs) => fmt((secs * 1e6) / steady.beats, 1);
    console.log(
      `   CPU over the ${fmt(r.steadyMs / 1000)} s steady phase (${fmt(steady.beats)} heartbeats, ${fmt((steady.beats * 1000) / r.steadyMs)}/s; the HTTP probe and the instances' own sweeps included), ` +
        `per heartbeat: instances ${steady.servers.map(perBeat).join(" + ")} µs, PostgreSQL ${perBeat(steady.postgres)} µs, Redis ${perBeat(steady.redis)} µs`,
    );
  } finally {
    await redis.stop();
  }
}

// --- 3. end-to-end efficiency ---------------------------------------------------------------

async function efficiency(compute = opts.compute ?? "wasm") {
  const [S, defaultTile, jobs] = QUICK ? [256, 64, 1] : [2048, 256, 3];
  const tile = Number(opts.tile ?? defaultTile);
  // Two tasks in hand while one computes: in the run a tile takes ~15 ms (the kernels share
  // the cores with the server and the harness), about the round trip of a 2 MiB panel here.
  const inFlight = Number(opts["in-flight"] ?? 3);
  await withServer({}, async (server) => {
    const vols = [];
    for (let i = 0; i < 2; i++) vols.push(await volunteer(server.url, { name: `e${i}`, compute, inFlight, panelCache: 256 << 20 }));
    console.log(`\n3. end-to-end efficiency (${compute} compute): ${S}×${S}·${S}×${S} f32 in ${tile}-wide tiles, 2 workers with ${inFlight} tasks requested or in hand each, ${jobs} job${jobs > 1 ? "s" : ""} one after another, every product checked`);
    const runs = [];
    for (let j = 0; j < jobs; j++) {
      for (const v of vols) v.restart();
      const a = randomF32(S * S, 11 + 2 * j);
      const b = randomF32(S * S, 12 + 2 * j);
      const job = await submitNpy(server.url, a, b, S, S, S, tile, "efficiency");
      // The server may hand out the first tasks before its answer to the submission arrives.
      const t0 = Math.min(performance.now(), ...vols.map((v) => v.stats.firstTask));
      const [server0, main0] = [cpuSeconds(server.proc.pid), threadCpuSeconds()];
      await waitForJob(server.url, job.id, { ms: 300000 });
      const wall = Math.max(...vols.map((v) => v.stats.lastAck)) - t0;
      const [serverCpu, mainCpu] = [cpuSeconds(server.proc.pid) - server0, threadCpuSeconds() - main0];
      if (process.env.LOAD_TRACE) {
        // The run's window on CLOCK_MONOTONIC, to cut a profile (`perf report --time`) to it.
        const mono = (t) => (Number(process.hrtime.bigint()) / 1e9 - (performance.now() - t) / 1e3).toFixed(6);
        console.log(`window ${mono(t0)},${mono(t0 + wall)}`);
        for (const [i, v] of vols.entries()) for (const [t, what] of v.stats.events) console.log(`w${i} ${(t - t0).toFixed(1).padStart(7)} ${what}`);
      }
      checkProduct(a, b, (await downloadNpy(server.url, job.id)).data, S, S, S);
      const perWorker = (key) => vols.reduce((sum, v) => sum + v.stats[key], 0) / vols.length;
      const run = {
        wall,
        efficiency: (100 * perWorker("kernelMs")) / wall,
        onCpu: (100 * perWorker("kernelCpuMs")) / wall,
        tasks: job.tasks_total,
      };
      runs.push(run);
      console.log(
        `   job ${j + 1}: wall ${fmt(wall)} ms, kernel time ${vols.map((v) => fmt(v.stats.kernelMs)).join(" + ")} ms (${vols.map((v) => v.stats.tasks).join(" + ")} tiles): ` +
          `${run.efficiency.toFixed(1)} %; the kernels on a CPU ${run.onCpu.toFixed(1)} %; CPU: server ${fmt(serverCpu * 1000)} ms, the harness's event loop ${fmt(mainCpu * 1000)} ms`,
      );
    }
    // The same tiles timed again one thread at a time, with the server idle and no transfers.
    const alone = compute === "wasm" ? await vols[0].alone(tile, S, tile) : NaN;
    for (const v of vols) v.stop();
    const med = (key) => quantile(runs.map((r) => r[key]), 0.5);
    console.log(`   wall from the job's acceptance (or its first task, if earlier) to its last result_ack`);
    console.log(`   efficiency ${med("efficiency").toFixed(1)} % (median)   (kernel time per worker / wall; ideal 100 %, target ≥ 85 %)`);
    console.log(`   the kernels' own time on a CPU: ${med("onCpu").toFixed(1)} % of the wall (median)   (without the time they waited for a core)`);
    if (compute === "wasm")
      console.log(
        `   against the kernel alone (${alone.toFixed(1)} ms a tile with the machine idle): ${((100 * runs[0].tasks * alone) / vols.length / med("wall")).toFixed(1)} %   (server, harness and 2 kernels share 2 cores)`,
      );
  });
}

// --- 4. bytes on the wire -------------------------------------------------------------------

async function bytes(compute = opts.compute ?? "wasm") {
  // The proportions of 4096×4096·4096×4096 in 256-wide tiles (a 16×16 grid of tasks), scaled.
  const [S, W] = QUICK ? [128, 4] : [1024, 16];
  const tile = S / 16;
  const runOnce = async (panelCache) =>
    withServer({}, async (server) => {
      const vols = [];
      for (let i = 0; i < W; i++) vols.push(await volunteer(server.url, { name: `b${i}`, compute, inFlight: 2, panelCache }));
      const a = randomF32(S * S, 21);
      const b = randomF32(S * S, 22);
      const job = await submitNpy(server.url, a, b, S, S, S, tile, "bytes");
      await waitForJob(server.url, job.id, { ms: 300000 });
      checkProduct(a, b, (await downloadNpy(server.url, job.id)).data, S, S, S);
      const sent = vols.reduce((s, v) => s + v.stats.bytesIn, 0);
      const serverSent = await metric(server.url, "brain_bytes_sent_total");
      for (const v of vols) v.stop();
      return { tasks: job.tasks_total, sent, serverSent, delivered: vols.reduce((s, v) => s + v.stats.tasks, 0) };
    });
  // Panel budget: 16 panels (a whole operand's worth; 64 MiB at 4096², what a page might
  // offer), against the 32 panels of A and B.
  const budget = 16 * tile * S * 4;
  const cached = await runOnce(budget);
  const plain = await runOnce(undefined);
  const naive = cached.tasks * 2 * tile * S * 4;
  const MiB = (x) => (x < 2 ** 20 ? `${(x / 1024).toFixed(0)} KiB` : `${(x / 2 ** 20).toFixed(1)} MiB`);
  console.log(`\n4. bytes on the wire: ${S}×${S}·${S}×${S} f32 in ${tile}-wide tiles (${cached.tasks} tasks, the proportions of 4096² in 256² tiles), ${W} workers, products checked`);
  console.log(`   naive (both panels with every task): ${MiB(naive)} per job, ${fmt(naive / cached.tasks / 1024)} KiB per task; measured without a cache: ${MiB(plain.sent)}`);
  console.log(`   with panel caches of ${MiB(budget)}: ${MiB(cached.sent)} per job, ${fmt(cached.sent / cached.delivered / 1024)} KiB per task delivered (server counted ${MiB(cached.serverSent)})`);
  console.log(`   ${(100 * (1 - cached.sent / naive)).toFixed(1)} % fewer input bytes than naive   (target ≥ 40 %)`);
}

// --- 5. the grid over shaped links ----------------------------------------------------------

/**
 * Figure 5 (#14): the same f32 job on `--volunteers` wasm volunteers, first straight over
 * loopback (the same-run anchor), then with each volunteer behind its own brain-shaper with
 * each profile of `--profiles`. Per run: delivered GFLOP/s for the grid and per volunteer,
 * beside the bound min(Σ kernel speed, Σ downlink × the I/O lower bound's intensity for the
 * announced caches), that bound with the uplinks' term (C goes up at least once), and the
 * bytes moved per flop against the lower bound's.
 */
async function network() {
  const profiles = opts.profiles.split(",").filter(Boolean);
  for (const p of profiles) if (!["campus", "home", "mobile"].includes(p)) throw new Error(`--profiles: some of campus, home, mobile, not ${p}`);
  const S = Number(opts.size ?? (QUICK ? 1024 : 4096));
  const tile = Number(opts.tile ?? (QUICK ? 128 : 256));
  const W = Number(opts.volunteers ?? 8);
  const budget = Number(opts["cache-mib"] ?? 64) * 2 ** 20;
  // As many tasks requested or in hand as the page keeps ("auto", 3–6): its round trip over
  // its compute time. Not deeper: tasks queue whole panels on a slow downlink ahead of the
  // server's pings (10 s interval, 10 s timeout), and a ping late by more than that ends the
  // connection; the page counts no round trip over a second (it waited for work, or for
  // such a queue), so on mobile it keeps 3, at most 4 panels (13 s at 10 Mbit/s) with blocks.
  const inFlight = (opts["in-flight"] ?? "auto") === "auto" ? "auto" : Number(opts["in-flight"]);
  const deadlineS = Number(opts.deadline ?? (QUICK ? 60 : 170));
  const K = Number(opts.k ?? S);
  // Whole k unless asked: the server's own choice (slices of at most 4096) with "auto".
  const split = opts["k-split"] === undefined ? 1 : opts["k-split"] === "auto" ? undefined : Number(opts["k-split"]);
  if (!(S % tile === 0 && W >= 1 && budget > 0 && (inFlight === "auto" || inFlight >= 1) && deadlineS > 0)) throw new Error("--size a multiple of --tile; --volunteers, --cache-mib, --in-flight (or auto), --deadline positive");
  if (!(Number.isInteger(K) && K >= 1 && (split === undefined || (Number.isInteger(split) && split >= 1)))) throw new Error("--k a whole number ≥ 1; --k-split a whole number ≥ 1 or auto");
  // Release shaper: the debug build caps at a few hundred Mbit/s, below the campus link.
  process.env.BRAIN_SHAPER_BIN ??= releaseShaper();

  const flops = 2 * S * S * K;
  const elements = budget / 4;
  // Smith, Lowery, Langou & van de Geijn, "A tight I/O lower bound for matrix multiplication"
  // (arXiv 1702.02017): with a fast memory of S elements, C += A·B (mnk FMAs, 2mnk flops)
  // reads at least 2mnk/√S elements (leading term). So at most √S flops per element received,
  // √S/4 per f32 byte.
  const intensity = Math.sqrt(elements) / 4;
  // Slices of k: as asked, or the server's choice (slices of at most 4096, as
  // `jobs::AUTO_SLICE_K`).
  const slices = split ?? Math.min(64, Math.ceil(K / 4096));
  // This job's own bound, whatever the cache: a volunteer that computes c elements of the
  // partial products of one slice of k (k/s long) receives at least 2(k/s)√c elements (rows
  // and columns of A and B) for 2(k/s)c flops, so with the s·mn elements of all the slices'
  // partials shared equally among W no schedule beats √(s·mn/W) flops per element.
  const jobIntensity = Math.sqrt((slices * S * S) / W) / 4;
  const a = randomF32(S * K, 51);
  const b = randomF32(K * S, 52);
  const MiB = (x) => `${fmt(x / 2 ** 20)} MiB`;
  const g = (x) => fmt(x / 1e9, 1);
  const perKflop = (bytes, fl) => fmt((1000 * bytes) / fl, 2);
  console.log(
    `\n5. the grid over shaped links: ${S}×${K}·${K}×${S} f32 (${g(flops)} GFLOP) in ${tile}-wide tiles, k ${split === 1 ? "whole" : split === undefined ? "split as the server chooses" : `in ${split} slices`}, ${W} volunteers ` +
      `(the wasm kernel, one Node worker thread each) announcing ${MiB(budget)} panel caches, ${inFlight === "auto" ? "as many tasks requested or in hand as the page keeps (3–6, from its round trip over its compute time)" : `${inFlight} tasks requested or in hand`} each; ` +
      `each volunteer through its own brain-shaper (release) with the profile, or straight to the server (loopback); every product checked (Freivalds)`,
  );
  console.log(
    `   bound = min(Σ kernel speed, Σ downlink × √S/4 flop/byte): S = ${MiB(budget)}/4 B = ${fmt(elements)} elements; at least 2mnk/√S elements ` +
      `are read for 2mnk flops (Smith, Lowery, Langou & van de Geijn, "A tight I/O lower bound for matrix multiplication", arXiv 1702.02017, ` +
      `leading term), so ≤ √S = ${fmt(Math.sqrt(elements))} flop per element, ${fmt(intensity)} flop/byte, ${perKflop(1, intensity)} B per kflop. ` +
      `Panels travel server → volunteer: the downlink is the link.`,
  );
  console.log(
    `   Σ kernel speed: each volunteer's kernel on ${tile}×k·k×${tile} tiles (k of one slice), timed before the job for 2 s all ${W} at once ` +
      `(the ${W} share this machine's ${availableParallelism()} cores; alone, one after another, in brackets)`,
  );
  console.log(
    `   this job's own bound, whatever the cache: with k in ${slices} slice${slices > 1 ? "s" : ""}, ${W} volunteers sharing the ${slices}·mn partials equally receive ≥ 2(k/${slices})√(${slices}·mn/${W}) elements each, ` +
      `≤ ${fmt(jobIntensity)} flop/byte (${perKflop(1, jobIntensity)} B per kflop); at ${S}² the job, not the ${MiB(budget)} caches, ` +
      `${jobIntensity < intensity ? "binds" : "does not bind"}`,
  );
  console.log(`   anchors: BOINC and Pando publish no figure under shaped links; the same job on unshaped loopback, in this run, is the anchor`);
  const stagger = Number(opts.stagger ?? 0);
  const ctx = { S, K, split, slices, tile, W, budget, inFlight, deadlineS, flops, intensity, jobIntensity, a, b, stagger };
  const rows = [];
  for (const profile of [null, ...profiles]) rows.push(await networkRun(profile, ctx));
  console.log(
    `\n   figure 5 in short (${S}², ${W} volunteers, ${MiB(budget)} caches; bound = min(Σ kernels, Σ downlink × ${fmt(intensity)} flop/byte), its smaller term named; ` +
      `"with up": of min(that, Σ uplink × k/2 flop/byte per slice of k), C going up once per slice):`,
  );
  console.log(`   ${"run".padEnd(9)} ${"wall s".padStart(7)} ${"GFLOP/s".padStart(8)} ${"bound".padStart(14)} ${"share".padStart(6)} ${"with up".padStart(8)} ${"of job's".padStart(9)} ${"B/kflop down".padStart(13)} ${"× bound".padStart(8)} ${"downlink busy".padStart(14)} resets`);
  for (const r of rows)
    console.log(
      `   ${r.name.padEnd(9)} ${(r.done ? fmt(r.secs, 1) : `>${deadlineS}`).padStart(7)} ${fmt(r.delivered / 1e9, 1).padStart(8)} ` +
        `${`${fmt(r.bound / 1e9, 1)} ${r.limit}`.padStart(14)} ${`${fmt((100 * r.delivered) / r.bound)} %`.padStart(6)} ${`${fmt((100 * r.delivered) / r.full)} %`.padStart(8)} ` +
        `${`${fmt((100 * r.delivered) / r.jobBound)} %`.padStart(9)} ${fmt(r.down, 2).padStart(13)} ${`${fmt(r.down / (1000 / intensity), 1)}×`.padStart(8)} ` +
        `${(Number.isNaN(r.busyDown) ? "–" : `${fmt(100 * r.busyDown)} %`).padStart(14)} ${r.resets}`,
    );
}

/** `target/release/brain-shaper`, built when missing. */
function releaseShaper() {
  const root = resolve(here, "../..");
  const bin = join(root, "target/release/brain-shaper");
  if (!existsSync(bin)) {
    const built = spawnSync("cargo", ["build", "--release", "-p", "shaper", "--bin", "brain-shaper"], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
    if (built.status !== 0) throw new Error(`cargo build --release -p shaper failed (status ${built.status})`);
  }
  return bin;
}

/** The link a shaper states in its log: `down 50 Mbit/s, up 10 Mbit/s, rtt 20 ms, …`. */
function shaperLink(log) {
  const m = log.match(/(down [^,]+, up [^,]+, rtt [^,]+, jitter [^,]+, [^\n]+?)\s*$/m);
  if (!m) throw new Error(`the shaper's log does not state its link (RUST_LOG=info shows it):\n${log.slice(0, 2000)}`);
  const mbps = (dir) => Number(m[1].match(new RegExp(`${dir} ([\\d.]+) Mbit/s`))?.[1] ?? Infinity);
  return { words: m[1].replace(/\x1b\[[0-9;]*m/g, ""), down: (mbps("down") * 1e6) / 8, up: (mbps("up") * 1e6) / 8 };
}

/** One run of figure 5: `profile` null is straight over loopback. */
async function networkRun(profile, { S, K, split, slices, tile, W, budget, inFlight, deadlineS, flops, intensity, jobIntensity, a, b, stagger }) {
  return withServer({}, async (server) => {
    const shapers = [];
    const vols = [];
    try {
      for (let i = 0; i < W; i++) {
        // A seed per volunteer: each link draws its own jitter and resets.
        const shaper = profile && (await startShaper({ upstream: server.url, profile, seed: 1 + i, maxSeconds: deadlineS + 120 }));
        shapers.push(shaper);
        vols.push(await volunteer(shaper ? shaper.url : server.url, { name: `${profile ?? "loopback"}-${i}`, compute: "wasm", inFlight, panelCache: budget, reconnect: true }));
      }
      // Flop/s, as every rate below: a task's k is one slice's.
      const kTask = Math.ceil(K / slices);
      const tileFlops = 2 * tile * kTask * tile;
      const alone = [];
      for (const v of vols) alone.push(tileFlops / ((await v.alone(tile, kTask, tile, 3)) / 1000));
      const together = (await Promise.all(vols.map((v) => v.alone(tile, kTask, tile, 3, 2000)))).map((ms) => tileFlops / (ms / 1000));
      for (const v of vols) v.restart();
      // --stagger: all but the first leave before the job and come back one by one after it
      // is accepted, as volunteers arrive on a real grid (their kernels were timed above).
      const join = (i) => volunteer(shapers[i] ? shapers[i].url : server.url, { name: `${profile ?? "loopback"}-${i}`, compute: "wasm", inFlight, panelCache: budget, reconnect: true });
      if (stagger) for (const v of vols.slice(1)) v.stop();
      const [server0, load0] = [cpuSeconds(server.proc.pid), loadavg()[0]];
      const job = await submitNpy(server.url, a, b, S, K, S, tile, `network ${profile ?? "loopback"}`, split);
      const arrivals = stagger
        ? (async () => {
            for (let i = 1; i < W; i++) {
              await sleep(stagger * 1000);
              vols[i] = await join(i);
            }
          })()
        : Promise.resolve();
      const t0 = Math.min(performance.now(), ...vols.map((v) => v.stats.firstTask));
      let done = true;
      try {
        await waitForJob(server.url, job.id, { ms: deadlineS * 1000 });
      } catch (e) {
        if (!/ not done in /.test(e.message)) throw e;
        done = false;
      }
      await arrivals;
      // To the moment the server said done (polled every 50 ms): on a slow link the last
      // result_ack reaches its volunteer later, and that is not the job's time.
      const wall = performance.now() - t0;
      const serverCpu = cpuSeconds(server.proc.pid) - server0;
      const status = (await api(server.url, `/api/jobs/${job.id}`)).json;
      // The last acks, for the per-volunteer counts.
      for (const until = Date.now() + 5000; done && Date.now() < until; await sleep(50))
        if (vols.reduce((n, v) => n + v.stats.accepted, 0) >= job.tasks_total) break;
      if (done) checkProduct(a, b, (await downloadNpy(server.url, job.id)).data, S, K, S);
      // Before the volunteers stop: closing counts as a disconnect.
      const reconnections = vols.reduce((n, v) => n + v.stats.resets, 0);
      for (const v of vols) v.stop();
      const summaries = await Promise.all(shapers.map((s) => s?.stop()));
      const link = profile ? shaperLink(shapers[0].log()) : null;
      if (process.env.LOAD_TRACE)
        for (const [i, v] of vols.entries())
          console.error(`${profile ?? "loopback"} volunteer ${i}:\n${v.stats.events.map(([at, what]) => `  ${((at - t0) / 1000).toFixed(3)} ${what}`).join("\n")}`);
      return report({ profile, link, vols, summaries, alone, together, wall, done, status, job, serverCpu, load0, reconnections, slices });
    } finally {
      for (const v of vols) v.stop();
      await Promise.all(shapers.map((s) => s?.stop()));
    }
  });

  function report({ profile, link, vols, summaries, alone, together, wall, done, status, job, serverCpu, load0, reconnections, slices }) {
    // C goes up once per slice of k: 4mn bytes a slice for 2mnk flops, k/(2·slices) flop per
    // byte up.
    const upIntensity = K / 2 / slices;
    const secs = wall / 1000;
    const sum = (xs) => xs.reduce((s, x) => s + x, 0);
    const kernels = sum(together);
    const links = link ? W * link.down * intensity : Infinity;
    const bound = Math.min(kernels, links);
    // C goes up once whatever the schedule (more often with k split): 4mn bytes for 2mnk
    // flops, k/2 flop per byte up. The issue's bound leaves it out.
    const uplinks = link ? W * link.up * upIntensity : Infinity;
    const full = Math.min(bound, uplinks);
    const jobBound = Math.min(kernels, link ? W * link.down * jobIntensity : Infinity, uplinks);
    const verified = sum(vols.map((v) => v.stats.flops));
    const delivered = (done ? flops : verified) / secs;
    const down = summaries.map((s, i) => s?.bytes_down ?? vols[i].stats.bytesIn);
    const up = summaries.map((s) => s?.bytes_up ?? NaN);
    const panels = vols.map((v) => v.stats.bytesIn);
    const g = (x) => fmt(x / 1e9, 1);
    const pct = (x, y) => `${fmt((100 * x) / y)} %`;
    const perKflop = (bytes, fl) => fmt((1000 * bytes) / fl, 2);
    const name = profile ? `${profile} (${link.words})` : "loopback (no shaper, no proxy)";
    const resets = profile ? sum(summaries.map((s) => s?.resets ?? 0)) : 0;
    const tiles = sum(vols.map((v) => v.stats.accepted));
    console.log(
      `\n   ${name}: ${done ? `done in ${fmt(secs, 1)} s, product checked` : `did not finish in ${deadlineS} s: ${status?.tasks_done ?? "?"} of ${job.tasks_total} tiles`}; ` +
        `${tiles} results acked as accepted for ${job.tasks_total} tiles${done && tiles < job.tasks_total ? ` (${job.tasks_total - tiles} acks lost with their connection: the server stored every tile)` : ""}; ${resets} resets by the shapers, ${reconnections} reconnections, ` +
        `${sum(vols.map((v) => v.stats.dropped))} results dropped with their connection; load average ${fmt(load0, 2)} at the start`,
    );
    console.log(
      `     grid: ${g(delivered)} GFLOP/s delivered${done ? "" : " (verified flops so far / time)"}; bound ${g(bound)} GFLOP/s = min(Σ kernels ${g(kernels)} ` +
        `[alone ${g(sum(alone))}], Σ downlink × ${fmt(intensity)} flop/byte ${link ? `${W} × ${fmt((link.down * 8) / 1e6)} Mbit/s → ${g(links)}` : "unlimited"}); ` +
        `${pct(delivered, bound)} of the bound${link ? `; of this job's own bound (${fmt(jobIntensity)} flop/byte → ${g(jobBound)}): ${pct(delivered, jobBound)}` : ""}`,
    );
    if (link)
      console.log(
        `     with the uplink: C goes up once per slice of k (${slices}), ${upIntensity} flop/byte, Σ uplink ${W} × ${fmt((link.up * 8) / 1e6)} Mbit/s → ${g(uplinks)} GFLOP/s; ` +
          `the bound with it ${g(full)} (${full === uplinks ? "the uplinks" : "as above"}): ${pct(delivered, full)} of it`,
      );
    if (link)
      console.log(
        `     at the bytes per flop moved, the downlinks carry at most ${g((W * link.down * flops) / sum(down))} GFLOP/s: delivered is ` +
          `${pct(delivered, (W * link.down * flops) / sum(down))} of that`,
      );
    console.log(
      `     bytes per kflop: down ${perKflop(sum(down), flops)} B (panels ${perKflop(sum(panels), flops)}), up ${profile ? perKflop(sum(up), flops) : "–"} B; ` +
        `lower bound down ${perKflop(1, intensity)} B (${fmt(sum(down) / flops / (1 / intensity), 1)}×), this job's ${perKflop(1, jobIntensity)} B ` +
        `(${fmt(sum(down) / flops / (1 / jobIntensity), 1)}×)`,
    );
    const busy = (bytes, rate) => (link ? pct(bytes / rate, secs) : "–");
    console.log(
      `     busy over the wall (mean per volunteer): downlink ${busy(sum(down) / W, link?.down)}, uplink ${busy(sum(up) / W, link?.up)}, ` +
        `in the kernel ${pct(sum(vols.map((v) => v.stats.kernelMs)) / W / 1000, secs)} (wall time, the cores shared); server CPU ${fmt(serverCpu, 1)} s (${pct(serverCpu, secs)} of a core)`,
    );
    console.log(
      `     per volunteer: GFLOP/s delivered (tiles) / its bound min(kernel with all ${W} at once [alone], downlink × ${fmt(intensity)} flop/byte, uplink × ${upIntensity}), ` +
        `MiB down/up, B per kflop down, resets, most tasks requested or in hand`,
    );
    const g2 = (x) => fmt(x / 1e9, 2);
    for (const [i, v] of vols.entries()) {
      const own = Math.min(together[i], link ? Math.min(link.down * intensity, link.up * upIntensity) : Infinity);
      console.log(
        `       ${String(i).padStart(2)}: ${g2(v.stats.flops / secs).padStart(5)} (${String(v.stats.accepted).padStart(3)}) / ${g2(own)} = ${pct(v.stats.flops / secs, own).padStart(4)}; ` +
          `kernel ${g2(together[i])} [${g(alone[i])}], ${fmt(down[i] / 2 ** 20).padStart(4)}/${profile ? fmt(up[i] / 2 ** 20) : "–"} MiB, ` +
          `${v.stats.flops ? perKflop(down[i], v.stats.flops) : "–"} B/kflop, ${summaries[i]?.resets ?? 0} resets, depth ${v.stats.depth}`,
      );
    }
    return {
      name: profile ?? "loopback", done, secs, delivered, bound, full, jobBound, limit: kernels <= links ? "kernels" : "links",
      down: (1000 * sum(down)) / flops, busyDown: link ? sum(down) / W / link.down / secs : NaN, resets,
    };
  }
}

/**
 * The server's egress shared among volunteers of different links (#14): the server runs in a
 * network namespace of its own, behind a veth whose egress `tbf` holds to `--egress-mbit`
 * (the kernel's own TCP shares it, as a real server's uplink would be shared); each volunteer
 * is behind its own brain-shaper with its profile (`--mix`). Reports each volunteer's download
 * rate while all of them were still receiving panels, against the max-min fair share, and
 * Jain's fairness index over the rates as shares of their fair shares.
 */
async function egress() {
  if (process.getuid?.() !== 0) {
    console.log("\negress: not run: it needs root, for a network namespace (ip netns) and tbf");
    return;
  }
  const mbit = Number(opts["egress-mbit"] ?? 100);
  const mix = (opts.mix ?? "campus:1,home:7").split(",").flatMap((part) => {
    const [profile, count] = part.split(":");
    if (!["campus", "home", "mobile"].includes(profile) || !(Number(count) >= 1)) throw new Error(`--mix: profile:count,… with campus, home or mobile, not ${part}`);
    return Array(Number(count)).fill(profile);
  });
  const S = Number(opts.size ?? 4096);
  const tile = Number(opts.tile ?? 256);
  const budget = Number(opts["cache-mib"] ?? 64) * 2 ** 20;
  if (!(mbit > 0 && S % tile === 0)) throw new Error("--egress-mbit positive, --size a multiple of --tile");
  process.env.BRAIN_SHAPER_BIN ??= releaseShaper();
  const id = process.pid % 250;
  const [ns, host, peer] = [`brain-egress-${process.pid}`, `beh${process.pid % 100000}`, `bes${process.pid % 100000}`];
  const [hostIp, serverIp] = [`10.254.${id}.1`, `10.254.${id}.2`];
  const ip = (...args) => {
    const r = spawnSync("ip", args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr || r.error} (the egress run needs root and iproute2)`);
  };
  const dir = mkdtempSync(join(tmpdir(), "brain-egress-"));
  const vols = [];
  const shapers = [];
  let server;
  try {
    ip("netns", "add", ns);
    ip("link", "add", host, "type", "veth", "peer", "name", peer);
    ip("link", "set", peer, "netns", ns);
    ip("addr", "add", `${hostIp}/30`, "dev", host);
    ip("link", "set", host, "up");
    ip("netns", "exec", ns, "ip", "addr", "add", `${serverIp}/30`, "dev", peer);
    ip("netns", "exec", ns, "ip", "link", "set", peer, "up");
    ip("netns", "exec", ns, "ip", "link", "set", "lo", "up");
    ip("netns", "exec", ns, "tc", "qdisc", "add", "dev", peer, "root", "tbf", "rate", `${mbit}mbit`, "burst", "256kb", "latency", "100ms");
    const wrapper = join(dir, "brain-server-in-ns");
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${resolve(process.env.BRAIN_SERVER_BIN ?? resolve(here, "../../target/debug/brain-server"))} "$@"\n`, { mode: 0o755 });
    server = await spawnServer(wrapper, {
      dbPath: join(dir, "brain.db"),
      webDir: join(dir, "no-web"),
      env: { HOST: serverIp, RUST_LOG: "warn", MAX_EVENTS_PER_SEC: "100000", MAX_LEASES_PER_ADDRESS: "1000000", MAX_SEND_BYTES_PER_SEC: String(2 ** 40) },
    });
    for (const [i, profile] of mix.entries()) {
      const shaper = await startShaper({ upstream: server.url, profile, seed: 1 + i, maxSeconds: 600 });
      shapers.push(shaper);
      vols.push(await volunteer(shaper.url, { name: `${profile}-${i}`, compute: "wasm", inFlight: "auto", panelCache: budget, reconnect: true }));
    }
    const a = randomF32(S * S, 61);
    const b = randomF32(S * S, 62);
    for (const v of vols) v.restart();
    const job = await submitNpy(server.url, a, b, S, S, S, tile, "egress");
    const t0 = Math.min(performance.now(), ...vols.map((v) => v.stats.firstTask));
    await waitForJob(server.url, job.id, { ms: 300000 });
    const wall = (performance.now() - t0) / 1000;
    checkProduct(a, b, (await downloadNpy(server.url, job.id)).data, S, S, S);
    // While every volunteer was still receiving panels: up to the first one's last panel.
    const until = Math.min(...vols.map((v) => v.stats.arrivals.at(-1)?.[0] ?? t0));
    const window = (until - t0) / 1000;
    const rates = vols.map((v) => (8 * v.stats.arrivals.filter(([at]) => at <= until).reduce((n, [, bytes]) => n + bytes, 0)) / window / 1e6);
    const links = shapers.map((sh) => shaperLink(sh.log()));
    // Max-min fair shares of the egress, each capped by its volunteer's downlink: the
    // smallest links take what they can, the rest is split evenly among the others.
    const caps = links.map((l) => (l.down * 8) / 1e6);
    const fair = new Array(vols.length).fill(0);
    let left = mbit;
    const order = caps.map((_, i) => i).sort((x, y) => caps[x] - caps[y]);
    for (const [n, i] of order.entries()) {
      fair[i] = Math.min(caps[i], left / (order.length - n));
      left -= fair[i];
    }
    const sum = (xs) => xs.reduce((x, y) => x + y, 0);
    // Jain's index over each rate as a share of its fair share (Jain, Chiu & Hawe 1984).
    const shares = rates.map((r, i) => r / fair[i]);
    const jain = sum(shares) ** 2 / (shares.length * sum(shares.map((x) => x * x)));
    console.log(
      `\negress: the server's egress held to ${mbit} Mbit/s (tbf, in its own network namespace), ${vols.length} volunteers (${opts.mix ?? "campus:1,home:7"}), ` +
        `${S}² f32 in ${tile}-wide tiles, done in ${fmt(wall, 1)} s, product checked`,
    );
    console.log(`   while all were receiving panels (the first ${fmt(window, 1)} s): ${fmt(sum(rates), 1)} Mbit/s of panels in all; Jain's index of the rates over their fair shares ${fmt(jain, 3)} (1 = each its fair share)`);
    for (const [i, v] of vols.entries())
      console.log(
        `     ${String(i).padStart(2)} ${mix[i].padEnd(6)} ${fmt(rates[i], 1).padStart(6)} Mbit/s (fair share ${fmt(fair[i], 1)}, ${fmt((100 * rates[i]) / fair[i])} % of it); ` +
          `${v.stats.accepted} tiles, ${fmt(v.stats.bytesIn / 2 ** 20)} MiB of panels in all`,
      );
  } finally {
    for (const v of vols) v.stop();
    await Promise.all(shapers.map((sh) => sh.stop()));
    await server?.kill("SIGTERM");
    spawnSync("ip", ["netns", "del", ns]); // and the veth pair with it, once moved there
    spawnSync("ip", ["link", "del", host]); // else
    rmSync(dir, { recursive: true, force: true });
  }
}

const byName = { network, egress, throughput, connections, efficiency, bytes, "scaleout-throughput": scaleoutThroughput, "scaleout-connections": scaleoutConnections };
try {
  for (const r of runs) await byName[r]();
} finally {
  const pg = await postgres;
  if (pg && process.env.LOAD_PG_LOG) copyFileSync(join(pg.dir, "postgres.log"), process.env.LOAD_PG_LOG);
  await pg?.stop();
}
process.exit(0);
