#!/usr/bin/env node
// The load harness (`make bench-grid`): starts the server for each run on 127.0.0.1 with a
// temporary database, opens Socket.io volunteers with the official client, and prints the
// grid's four figures with their targets and anchors beside them. Every job it runs is checked
// against a product computed here, independently of the server; it asserts no timings.
//
//   node load.mjs [throughput|connections|efficiency|bytes|all]... [--compute none|wasm] [--quick]
//                 [--tile N] [--in-flight N]      (efficiency: tile width, tasks per volunteer)
//   LOAD_TRACE=1  prints every volunteer's events, and the efficiency run's time window on
//                 CLOCK_MONOTONIC for `perf report --time` against `perf record -k mono`
//
// Compute: `none` answers each task with a plain JavaScript loop (instant for the tiny tiles of
// the throughput run, to load the scheduler alone); `wasm` runs the real worker-wasm module
// (worker-wasm/pkg-simd, the page's build) in one Node worker thread per volunteer, so the
// sockets' event loop never waits on a kernel. Bounded: every wait has a deadline, and
// `--quick` shrinks every run to a few seconds (the test suite runs it that way).
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { api, connect, referenceProduct, npyEncode, once, randomMatrix, rowsOf, startServer, toBytes, waitForJob, fromBytes, downloadNpy } from "./helpers.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    compute: { type: "string" },
    quick: { type: "boolean", default: false },
    pkg: { type: "string", default: resolve(here, "../../worker-wasm/pkg-simd") },
    tile: { type: "string" },
    "in-flight": { type: "string" },
  },
});
const QUICK = opts.quick;
const runs = positionals.length === 0 || positionals.includes("all") ? ["throughput", "connections", "efficiency", "bytes"] : positionals;
for (const r of runs)
  if (!["throughput", "connections", "efficiency", "bytes"].includes(r)) throw new Error(`unknown run ${r}`);

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

/** A counter from the server's /metrics. */
async function metric(url, name) {
  const text = (await api(url, "/metrics")).text;
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : NaN;
}

// --- independent checks --------------------------------------------------------------------

/**
 * Freivalds' check, done here in f64: C·x against A·(B·x) for three random vectors, each entry
 * within a bound on f32 accumulation error (4·k·ε·(|A|·(|B|·|x|))). O(n²), so it scales to the
 * big jobs where a full reference product in JavaScript would take minutes.
 */
function checkProduct(a, b, c, m, k, n, dtype = "f32") {
  const eps = dtype === "f32" ? 1.2e-7 : 2.3e-16;
  for (let round = 0; round < 3; round++) {
    const x = Float64Array.from({ length: n }, () => Math.random() * 2 - 1);
    const bx = new Float64Array(k), absBx = new Float64Array(k);
    for (let p = 0; p < k; p++)
      for (let j = 0; j < n; j++) {
        bx[p] += b[p * n + j] * x[j];
        absBx[p] += Math.abs(b[p * n + j] * x[j]);
      }
    for (let i = 0; i < m; i++) {
      let want = 0, scale = 0, got = 0;
      for (let p = 0; p < k; p++) {
        want += a[i * k + p] * bx[p];
        scale += Math.abs(a[i * k + p]) * absBx[p];
      }
      for (let j = 0; j < n; j++) got += c[i * n + j] * x[j];
      if (!(Math.abs(got - want) <= 4 * k * eps * scale + 1e-9))
        throw new Error(`product check failed at row ${i}: C·x = ${got}, A·(B·x) = ${want}`);
    }
  }
}

/** Straight into a Float32Array: a plain array of millions of numbers would leave the
 * measured run a garbage collector's worth of the harness's own setup to sweep. */
const randomF32 = (len, seed) => randomMatrix(1, len, "f32", seed);

async function submitNpy(url, a, b, m, k, n, tile, name) {
  const form = new FormData();
  form.append("a", new Blob([npyEncode("f32", m, k, a)]), "a.npy");
  form.append("b", new Blob([npyEncode("f32", k, n, b)]), "b.npy");
  form.append("tile", String(tile));
  form.append("name", name);
  const res = await api(url, "/api/jobs", { method: "POST", body: form });
  if (res.status !== 201) throw new Error(`submit: ${res.status} ${res.text}`);
  return res.json;
}

// --- volunteers -----------------------------------------------------------------------------

/**
 * One volunteer: a Socket.io connection that registers, keeps `inFlight` tasks requested or
 * computing (so the next task is on its way while one computes), and answers with `compute`. With a
 * `panelCache` budget it announces the cache and keeps panels by the keys the server gives.
 */
async function volunteer(url, { name, compute, inFlight = 2, panelCache }) {
  const stats = { accepted: 0, refused: 0, kernelMs: 0, kernelCpuMs: 0, bytesIn: 0, tasks: 0, firstTask: Infinity, lastAck: 0, events: [] };
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
  const socket = connect(url);
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
    const info = { name, threads: 1 };
    if (panelCache) info.panel_cache = { budget_bytes: panelCache };
    socket.emit("register_worker", info);
  });
  socket.on("protocol_error", ({ code, message }) => {
    stats.errors = (stats.errors ?? 0) + 1;
    if (process.env.LOAD_TRACE) console.error(`${name}: protocol_error ${code}: ${message}`);
  });
  socket.on("task_cancelled", () => socket.emit("request_task"));
  socket.on("registration_ack", () => {
    for (let i = 0; i < inFlight; i++) socket.emit("request_task");
  });
  socket.on("task_assigned", async (task) => {
    note(`assigned ${task.task_id} a=${task.a?.length ?? 0} b=${task.b?.length ?? 0}`);
    stats.tasks++;
    stats.firstTask = Math.min(stats.firstTask, performance.now());
    stats.bytesIn += (task.a?.length ?? 0) + (task.b?.length ?? 0);
    const [a, b] = [task.a ?? cache.get(task.a_key), task.b ?? cache.get(task.b_key)];
    if (!a || !b) return socket.emit("panel_missing", { task_id: task.task_id });
    if (panelCache) {
      // Keys only for `wasm`: the bytes go to the compute thread.
      for (const [key, bytes] of [[task.a_key, task.a], [task.b_key, task.b]])
        if (bytes) cache.set(key, compute === "wasm" ? true : bytes);
      for (const key of task.evict ?? []) cache.delete(key);
    }
    const { c, ms, cpuMs } = await run(task, a, b);
    note(`computed ${task.task_id} in ${ms.toFixed(1)} ms`);
    stats.kernelMs += ms;
    stats.kernelCpuMs += cpuMs;
    socket.emit("task_result", { task_id: task.task_id, c, compute_ms: Math.round(ms) });
    // The next request goes out with the result, not after its ack, as the page does: the
    // server's verification and commit then overlap the next task's transfer and compute.
    socket.emit("request_task");
  });
  socket.on("result_ack", (ack) => {
    note(`ack ${ack.task_id}`);
    if (ack.accepted) stats.accepted++;
    else stats.refused++;
    stats.lastAck = performance.now();
  });
  await once(socket, "registration_ack", 30000);
  return {
    stats,
    /** This volunteer's kernel on an m×k·k×n f32 tile with the machine otherwise idle, in ms. */
    alone: (m, k, n) =>
      new Promise((res) => {
        const id = seq++;
        pending.set(id, ({ ms }) => {
          pending.delete(id);
          res(ms);
        });
        thread.postMessage({ id, m, k, n, alone: 5 });
      }),
    /** Starts this volunteer's figures afresh, for the next job. */
    restart() {
      Object.assign(stats, { kernelMs: 0, kernelCpuMs: 0, bytesIn: 0, tasks: 0, firstTask: Infinity, lastAck: 0, events: [] });
    },
    stop() {
      socket.close();
      thread?.terminate();
    },
  };
}

async function withServer(env, fn) {
  // Every simulated volunteer connects from 127.0.0.1: the per-address caps would make them one.
  const server = await startServer(null, {
    env: {
      RUST_LOG: "warn", MAX_EVENTS_PER_SEC: "100000", MAX_LEASES_PER_ADDRESS: "1000000",
      MAX_SEND_BYTES_PER_SEC: String(2 ** 40), ...env,
    },
  });
  try {
    return await fn(server);
  } finally {
    await server.kill("SIGTERM");
  }
}

// --- 1. scheduler throughput ----------------------------------------------------------------

async function throughput(compute = opts.compute ?? "none") {
  const [W, N] = QUICK ? [10, 30] : [100, 142]; // 142² = 20,164 tasks
  await withServer({ MAX_CONNECTIONS_PER_IP: "100000" }, async (server) => {
    const vols = [];
    for (let i = 0; i < W; i++) vols.push(await volunteer(server.url, { name: `w${i}`, compute, inFlight: 4 }));
    const a = randomMatrix(N, 1, "f64", 1);
    const b = randomMatrix(1, N, "f64", 2);
    const cpu0 = cpuSeconds(server.proc.pid);
    const t0 = performance.now();
    const res = await api(server.url, "/api/jobs", { method: "POST", body: { a: rowsOf(a, N, 1), b: rowsOf(b, 1, N), tile: 1 } });
    const job = await waitForJob(server.url, res.json.id, { ms: 300000 });
    const secs = (performance.now() - t0) / 1000;
    const serverCpu = cpuSeconds(server.proc.pid) - cpu0;
    const got = (await api(server.url, `/api/jobs/${job.id}/result?format=json`)).json.c;
    for (let i = 0; i < N; i++)
      for (let j = 0; j < N; j++)
        if (Math.abs(got[i][j] - Math.fround(a[i]) * Math.fround(b[j])) > 1e-6) throw new Error(`C[${i}][${j}] is wrong`);
    for (const v of vols) v.stop();
    console.log(`\n1. scheduler throughput (${compute} compute): ${fmt(job.tasks_total)} tasks of 1×1, ${W} workers, ${secs.toFixed(2)} s, product checked`);
    console.log(`   ${fmt(job.tasks_total / secs)} verified, committed completions/s   (target ≥ 5,000; Dask ~1,000/s at ~1 ms per task; one BOINC server ~100/s)`);
    console.log(`   server CPU ${fmt((serverCpu * 1e6) / job.tasks_total)} µs per task   (the load generator shares this 2-core machine)`);
  });
}

// --- 2. connections -------------------------------------------------------------------------

async function connections() {
  const [N, wave, waves, steadyMs] = QUICK ? [200, 50, 2, 2000] : [5000, 1000, 3, 20000];
  // Heartbeats every 2 s (LEASE_MS / 3), five times the default rate, to load the server.
  await withServer({ MAX_CONNECTIONS_PER_IP: "100000", LEASE_MS: "6000" }, async (server) => {
    const pid = server.proc.pid;
    const rss0 = rssMiB(pid);
    const rtts = [];
    const http = [];
    let probing = true;
    const prober = (async () => {
      for (let i = 0; probing; i++) {
        const t0 = performance.now();
        const res = await api(server.url, i % 2 ? "/api/status" : "/health");
        if (res.status !== 200) throw new Error(`HTTP ${res.status} while under load`);
        http.push(performance.now() - t0);
        await sleep(100);
      }
    })();
    let live = new Set();
    const open = async (i) => {
      const socket = connect(server.url);
      let beat, sentAt = 0;
      socket.on("heartbeat_ack", () => {
        if (sentAt) rtts.push(performance.now() - sentAt);
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
    const online = async () => (await api(server.url, "/api/status")).json.workers_online;
    const t0 = performance.now();
    await openMany(N, 0);
    const connectSecs = (performance.now() - t0) / 1000;
    await sleep(500);
    if ((await online()) !== N) throw new Error(`server counts ${await online()} workers online, not ${N}`);
    await sleep(steadyMs);
    const rssPeak = rssMiB(pid);
    const steadyRtts = rtts.length;
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
    const after = await online();
    if (after !== N) throw new Error(`after ${waves} waves the server counts ${after} workers online, not ${N}`);
    probing = false;
    await prober;
    const rssEnd = rssMiB(pid);
    for (const c of live) c.close();
    console.log(`\n2. connections: ${fmt(N)} registered workers heartbeating every 2 s, then ${waves} waves of ${fmt(wave)} leaving and ${fmt(wave)} joining`);
    console.log(`   connected and registered in ${connectSecs.toFixed(1)} s; the server counted ${fmt(N)} online before and after the waves`);
    console.log(`   server RSS ${fmt(rss0)} MiB idle, ${fmt(rssPeak)} MiB with ${fmt(N)} connected, ${fmt(rssEnd)} MiB after the waves (${fmt(((rssPeak - rss0) * 1024) / N, 1)} KiB per connection)`);
    console.log(`   heartbeat round trip over ${fmt(rtts.length)} beats (${fmt(steadyRtts)} steady): p50 ${quantile(rtts, 0.5).toFixed(1)} ms, p99 ${quantile(rtts, 0.99).toFixed(1)} ms, max ${Math.max(...rtts).toFixed(1)} ms`);
    console.log(`   HTTP /health and /api/status during it all (${http.length} requests): p50 ${quantile(http, 0.5).toFixed(1)} ms, p99 ${quantile(http, 0.99).toFixed(1)} ms, max ${Math.max(...http).toFixed(1)} ms   (target: 5,000 connected, responsive)`);
  });
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

for (const r of runs) await { throughput, connections, efficiency, bytes }[r]();
process.exit(0);
