#!/usr/bin/env node
// The volunteer page in a real browser (`make bench-page`, issue #17): end-to-end GFLOP/s of
// the page in web/dist, in Debian's headless Chromium, against a release server on loopback,
// beside the kernel's own speed measured in the same page and the same build's kernel in Node.
// Asserts no timings; every product is checked (Freivalds) against the inputs.
//
//   node web/bench/page.mjs [--quick] [--cases 2048,wide,thin,MxKxN[/tile]] [--threads 1,2]
//                           [--repeat N] [--trace] [--trace-case CASE/THREADS] [--no-anchor]
//                           [--driver cdp|playwright] [--waits]
//
// Chromium is driven through the DevTools protocol directly (`--driver cdp`, the default), not
// through Playwright, whose instrumentation of every page costs the page's WebSocket real time
// (see `launch` below); `--driver playwright` measures with it, for comparison.
//
// Per case (a job shape at a thread count): a fresh server (127.0.0.1, port 0, temporary
// DATABASE_PATH, its jobs beside it), a fresh browser context with the thread count preset in
// localStorage as the page's own setting (`brain.threads`), the start button pressed, then a
// wait until every thread has warmed up and the page sits idle with its requests open. Only
// then is the job submitted (one multipart body with the two .npy files, encoded beforehand and
// sent with node:http), and the wall time runs from
// the submission's first byte to the first poll (every 5 ms) that sees the job `done`. Each
// case runs `--repeat` times (3; 1 with --quick) and the run with the median wall time is
// printed, with the range of the end-to-end figure.
//
//   end-to-end   2·m·k·n / wall
//   kernel       per thread, Σ flops / Σ compute_ms of the job's tiles as the compute threads
//                reported them (compute_ms covers copying the panels into wasm memory and C
//                out of it, see worker-wasm/src/thread.rs); "page shows" is the page's own
//                "speed per thread" (an exponential average) at the end
//   efficiency   end-to-end / (kernel × threads)
//   kernel busy  Σ compute_ms / (wall × threads)
//   cores busy   CPU seconds / wall over the job, from /proc: the server's, Chromium's
//                (every process it started; cdp driver only), and this script's own (its
//                upload and its polls share the cores with the page)
//                (every process it started; cdp driver only)
//   idle kernel  before the job, one more compute thread of the page's own on the idle page,
//                fed synthetic tiles of the job's tile shape by postMessage (no network):
//                the kernel in this browser without the job's traffic around it
//   from the job's acceptance
//                the same figures with the wall counted from the submission's reply (201):
//                the volunteer's side alone, nothing being computable before the job exists
//   phases       the upload; to the first task reaching the page and its kernel starting;
//                the tiles' span, per thread split into computing, waiting for work (the
//                thread had ended its last task before the page handed it the next) and
//                handing over (from the page's postMessage to the kernel starting); and the
//                time after the last tile. From the `started_at`/`ended_at` each compute
//                thread reports with a result and the hand-over times the init script notes
//   effective    the page's own "effective speed" (verified work per second of late)
//
// The compute threads' `done` messages are observed by a listener this script adds to each
// Worker the page creates (an init script wraps the page's Worker constructor): the page's
// code is not changed, and its own `onmessage` still runs as before.
//
// --waits prints, for the run that stands for each case, every wait for work over 2 ms per
// thread: before which of its tiles, and the panel bytes that task brought.
//
// --trace records one more run of a case (--trace-case CASE/THREADS[,…]: several; default the
// first case at 1 thread) with Chrome's tracing through the DevTools protocol, and prints where
// each thread's time went inside the job's window: busy and idle, and the events by self time,
// grouped (script, GC, wasm, messages between threads, network, rendering). A compute thread's
// kernel shows as `FunctionCall` self time (wasm frames have no events of their own); Σ
// compute_ms is printed beside it. The breakdown and the raw trace (Perfetto, chrome://tracing) go to
// test-output/bench-page/.
//
// Needs: target/release/brain-server (cargo build --release -p server), web/dist
// (scripts/build-web.sh), web/node_modules (npm ci there: playwright-core, and `ws` on Node
// older than 22) and /usr/bin/chromium (CHROMIUM_BIN).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values: opts } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    cases: { type: "string" },
    threads: { type: "string" },
    trace: { type: "boolean", default: false },
    "trace-case": { type: "string" },
    "no-anchor": { type: "boolean", default: false },
    driver: { type: "string", default: "cdp" },
    repeat: { type: "string" },
    waits: { type: "boolean", default: false },
  },
  allowPositionals: false,
  strict: true,
});

// The release server unless told otherwise; set before importing the helpers, which read it.
process.env.BRAIN_SERVER_BIN ??= new URL("../../target/release/brain-server", import.meta.url).pathname;
const { ROOT, SERVER_BIN, WEB_DIR, CHROMIUM, startServer, launchBrowser, tempDir, cleanup, waitFor, getJson, randomMatrix } =
  await import("../test/e2e/helpers.mjs");
const { encodeNpy, decodeNpy } = await import("../src/common/npy.js");
const { checkProduct } = await import("../../tests/support/matrix.mjs");

const OUT = join(ROOT, "test-output/bench-page");
const missing = [
  [SERVER_BIN, "the release server: cargo build --release -p server"],
  [join(WEB_DIR, "volunteer.js"), "the page: scripts/build-web.sh (make web)"],
  [CHROMIUM, "Chromium: apt-get install -y chromium"],
].filter(([path]) => !existsSync(path));
if (missing.length) {
  for (const [path, how] of missing) console.error(`bench-page: missing ${path} (${how})`);
  process.exit(2);
}

// --- cases ----------------------------------------------------------------------------------

const NAMED = {
  2048: { m: 2048, k: 2048, n: 2048, tile: 256, label: "2048² tile 256" },
  wide: { m: 4096, k: 1024, n: 4096, tile: 256, label: "4096×1024×4096 tile 256" },
  thin: { m: 4096, k: 64, n: 4096, tile: 256, label: "thin k 4096×64×4096 tile 256" },
  1024: { m: 1024, k: 1024, n: 1024, tile: 256, label: "1024² tile 256" },
};

function parseCase(text) {
  if (NAMED[text]) return { name: text, ...NAMED[text] };
  const match = text.match(/^(\d+)x(\d+)x(\d+)(?:\/(\d+))?$/);
  if (!match) throw new Error(`--cases: ${text} is neither ${Object.keys(NAMED).join(", ")} nor MxKxN[/tile]`);
  const [m, k, n, tile] = match.slice(1).map(Number);
  return { name: text, m, k, n, tile: tile || 256, label: `${m}×${k}×${n} tile ${tile || 256}` };
}

const shapes = (opts.cases ?? (opts.quick ? "1024" : "2048,wide,thin")).split(",").map(parseCase);
const threadCounts = (opts.threads ?? (opts.quick ? "1" : "1,2")).split(",").map(Number);
if (!["cdp", "playwright"].includes(opts.driver)) throw new Error(`--driver cdp|playwright, not ${opts.driver}`);
const repeat = Number(opts.repeat ?? (opts.quick ? 1 : 3));
if (!(Number.isInteger(repeat) && repeat >= 1)) throw new Error(`--repeat: ${opts.repeat} is not a count`);
for (const t of threadCounts) if (!(Number.isInteger(t) && t >= 1)) throw new Error(`--threads: ${t} is not a thread count`);

// --- the page -------------------------------------------------------------------------------

/**
 * Runs in the page before its own scripts: counts each compute thread's `done` messages with a
 * listener of its own beside the page's `onmessage`, and notes when the page handed each task
 * over (`postMessage`) and when the thread started and ended it (the `started_at`/`ended_at`
 * it reports, on the clock the page and its threads share). `__benchThreads[i]`: the i-th
 * Worker made.
 */
function observeWorkers() {
  const Native = globalThis.Worker;
  const threads = [];
  const fresh = () => ({ tiles: 0, flops: 0, computeMs: 0, first: null, last: null, handed: {}, spans: [] });
  globalThis.__benchThreads = threads;
  let computed = { want: Infinity, resolve: () => {} };
  globalThis.__benchReset = () => {
    globalThis.__benchT0 = performance.now();
    for (const t of threads) Object.assign(t, fresh());
  };
  // Resolves once the threads have computed `tiles` tiles since the reset: the bench waits on
  // this instead of asking the server every few ms for the whole job.
  globalThis.__benchComputed = (tiles) =>
    new Promise((resolve) => {
      computed = { want: tiles, resolve };
      if (threads.reduce((s, t) => s + t.tiles, 0) >= tiles) resolve(true);
    });
  const post = Native.prototype.postMessage;
  globalThis.Worker = class extends Native {
    constructor(...args) {
      super(...args);
      const t = { ...fresh(), warmGflops: 0 };
      threads.push(t);
      this.postMessage = (msg, ...rest) => {
        if (msg?.type === "task") {
          const bytes = (msg.task.a?.byteLength ?? 0) + (msg.task.b?.byteLength ?? 0);
          t.handed[msg.task.task_id] = [performance.now(), bytes];
        }
        return post.call(this, msg, ...rest);
      };
      this.addEventListener("message", (event) => {
        const msg = event.data;
        if (msg?.type === "ready") t.warmGflops = msg.gflops;
        if (msg?.type !== "done" || !msg.c) return;
        const start = msg.started_at - performance.timeOrigin;
        const end = msg.ended_at - performance.timeOrigin;
        t.tiles += 1;
        t.flops += msg.flops;
        t.computeMs += msg.compute_ms;
        t.first ??= start;
        t.last = end;
        const [handed, bytes] = t.handed[msg.task_id] ?? [NaN, 0];
        t.spans.push([handed, start, end, bytes]);
        if (threads.reduce((s, t) => s + t.tiles, 0) >= computed.want) computed.resolve(true);
      });
    }
  };
}

/**
 * Where a thread's time between its first tile's start and its last tile's end went, in
 * seconds: computing, waiting for a task to reach the page (the thread had ended its last one
 * before the page handed it the next), and the handing over itself (from the page's
 * `postMessage` to the thread starting: the message, the panels copied into wasm memory, and
 * the thread's own queue).
 */
function betweenTiles(spans) {
  const out = { computing: 0, waiting_for_work: 0, handing_over: 0 };
  spans.sort((x, y) => x[1] - y[1]);
  for (const [i, [handed, start, end]] of spans.entries()) {
    out.computing += (end - start) / 1000;
    if (i === 0) continue;
    const free = spans[i - 1][2];
    out.waiting_for_work += Math.max(0, Math.min(handed, start) - free) / 1000;
    out.handing_over += Math.max(0, start - Math.max(handed, free)) / 1000;
  }
  return out;
}

/** A thread's waits for work over 2 ms (see `betweenTiles`): [its tile's index, ms, panel bytes]. */
function waitsOf(spans) {
  const sorted = [...spans].sort((x, y) => x[1] - y[1]);
  return sorted.flatMap(([handed, start, , bytes], i) => {
    const ms = i === 0 ? 0 : Math.min(handed, start) - sorted[i - 1][2];
    return ms > 2 ? [[i, ms, bytes]] : [];
  });
}

/**
 * Two ways to drive Chromium, behind one small interface (`evaluate(expression)`, `cdp` with
 * `send`/`once`, `close`):
 *
 * - `cdp` (default): Chromium started here with a DevTools port, one browser-level CDP
 *   connection, and per case a fresh browser context whose page gets only what this script
 *   asks (an init script, `Runtime.evaluate`). Nothing else watches the page.
 * - `playwright`: playwright-core's `chromium.launch`. Playwright enables the Network domain
 *   on every page, so Chromium reports each WebSocket frame, payload included, over the
 *   DevTools pipe: with megabyte panels that costs the browser real time (see
 *   docs/benchmarks.md), so it is kept only for comparison.
 */
async function launch(driver) {
  if (driver === "playwright") {
    const browser = await launchBrowser();
    return {
      version: browser.version(),
      async open(init) {
        const context = await browser.newContext();
        await context.addInitScript({ content: `(${init})()` });
        const page = await context.newPage();
        const errors = [];
        page.on("pageerror", (e) => errors.push(e.message));
        const cdp = await context.newCDPSession(page);
        return {
          errors,
          goto: (url) => page.goto(url),
          evaluate: (expression) => page.evaluate(expression),
          cdp: { send: (m, p) => cdp.send(m, p), once: (e) => new Promise((r) => cdp.once(e, r)) },
          close: () => context.close(),
        };
      },
      close: () => browser.close(),
    };
  }
  return launchCdp();
}

/** A minimal Chrome DevTools Protocol client over one WebSocket, with flattened sessions. */
async function launchCdp() {
  const WebSocketImpl = globalThis.WebSocket ?? (await import("ws")).WebSocket;
  const profile = tempDir();
  const proc = spawn(CHROMIUM, [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--remote-debugging-port=0", `--user-data-dir=${profile}`, "about:blank",
  ], { stdio: ["ignore", "ignore", "pipe"] });
  const wsUrl = await new Promise((resolve, reject) => {
    let err = "";
    const timer = setTimeout(() => reject(new Error(`chromium did not start:\n${err}`)), 60_000);
    proc.stderr.on("data", (d) => {
      err += d;
      const m = err.match(/DevTools listening on (ws:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once("exit", (code) => reject(new Error(`chromium exited with ${code}:\n${err}`)));
  });
  const ws = new WebSocketImpl(wsUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`cannot connect to ${wsUrl}`));
  });
  let nextId = 1;
  const calls = new Map();
  const listeners = new Set();
  ws.onmessage = (event) => {
    const msg = JSON.parse(typeof event.data === "string" ? event.data : event.data.toString());
    if (msg.id !== undefined) {
      const call = calls.get(msg.id);
      calls.delete(msg.id);
      if (msg.error) call?.reject(new Error(`${call.method}: ${msg.error.message}`));
      else call?.resolve(msg.result);
    } else {
      for (const l of listeners) l(msg);
    }
  };
  const send = (method, params = {}, sessionId) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      calls.set(id, { resolve, reject, method });
      ws.send(JSON.stringify({ id, method, params, ...(sessionId && { sessionId }) }));
    });
  const { product } = await send("Browser.getVersion");
  return {
    pid: proc.pid,
    version: product,
    async open(init) {
      const { browserContextId } = await send("Target.createBrowserContext");
      const { targetId } = await send("Target.createTarget", { url: "about:blank", browserContextId });
      const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
      const call = (method, params) => send(method, params, sessionId);
      const errors = [];
      const onError = (msg) => {
        if (msg.sessionId === sessionId && msg.method === "Runtime.exceptionThrown")
          errors.push(msg.params.exceptionDetails.exception?.description ?? msg.params.exceptionDetails.text);
      };
      listeners.add(onError);
      await call("Runtime.enable");
      await call("Page.enable");
      await call("Page.addScriptToEvaluateOnNewDocument", { source: `(${init})()` });
      const evaluate = async (expression) => {
        const r = await call("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
        if (r.exceptionDetails) throw new Error(r.exceptionDetails.exception?.description ?? r.exceptionDetails.text);
        return r.result.value;
      };
      return {
        errors,
        async goto(url) {
          await call("Page.navigate", { url });
          await waitFor(() => evaluate("document.readyState === 'complete' && Boolean(globalThis.brainVolunteer)"), "the page to load", 30_000, 50);
        },
        evaluate,
        cdp: {
          send: call,
          once: (event) =>
            new Promise((resolve) => {
              const l = (msg) => {
                if (msg.sessionId === sessionId && msg.method === event) {
                  listeners.delete(l);
                  resolve(msg.params);
                }
              };
              listeners.add(l);
            }),
        },
        async close() {
          listeners.delete(onError);
          await send("Target.disposeBrowserContext", { browserContextId });
        },
      };
    },
    async close() {
      await send("Browser.close").catch(() => {});
      ws.close();
      await new Promise((r) => (proc.exitCode === null ? proc.once("exit", r) : r()));
      cleanup(profile);
    },
  };
}

/** Opens the page with `threads` threads, presses start, waits until it is warm and idle. */
async function openPage(browser, url, threads) {
  const page = await browser.open(`() => {
    localStorage.setItem("brain.threads", ${JSON.stringify(String(threads))});
    (${observeWorkers})();
  }`);
  await page.goto(url);
  await page.evaluate("document.getElementById('start').click()");
  const snap = () => page.evaluate("globalThis.brainVolunteer.snapshot()");
  await waitFor(async () => {
    const s = await snap();
    if (s.phase === "error") throw new Error(`the page stopped: ${await page.evaluate("document.getElementById('log').textContent")}`);
    return s.phase === "running" && s.registered && s.threads === threads && s.pending > 0 && s.computing === 0;
  }, `the page to warm up ${threads} thread(s)`, 60_000, 100);
  // Let the warm-up's garbage and the first renders settle: the job must meet an idle page.
  await new Promise((r) => setTimeout(r, 1000));
  const s = await snap();
  if (s.threads !== threads) throw new Error(`the page runs ${s.threads} threads, not ${threads} (hardwareConcurrency?)`);
  return { ...page, snap };
}

/**
 * The kernel alone in this browser: a compute thread of the page's own (compute-worker.js, the
 * build the page chose), started beside the idle page and handed `tasks` synthetic tiles of the
 * job's shape straight by postMessage, no network. GFLOP/s from its compute_ms, the median of
 * the last two thirds. Run in the page before the job is submitted.
 */
const IDLE_KERNEL = `async ({ m, k, n, tasks }) => {
  const manifest = await (await fetch("wasm-manifest.json")).json();
  const variant = globalThis.brainVolunteer.snapshot().variant;
  const module = await WebAssembly.compileStreaming(fetch(manifest.variants[variant].file));
  const worker = new Worker(new URL("compute-worker.js", document.baseURI));
  const next = () => new Promise((resolve) => worker.addEventListener("message", (e) => resolve(e.data), { once: true }));
  worker.postMessage({ type: "init", variant, module, duty: 1, thread: 99 });
  const ready = await next();
  if (ready.type !== "ready") throw new Error("idle kernel: " + JSON.stringify(ready));
  const fill = (len) => Float32Array.from({ length: len }, (_, i) => ((i * 7919) % 2001) / 1000 - 1).buffer;
  const a = fill(m * k), b = fill(k * n);
  const gflops = [];
  for (let i = 0; i < tasks; i++) {
    worker.postMessage({ type: "task", task: { task_id: "idle-" + i, dtype: "f32", m, k, n, a, b } });
    const done = await next();
    if (done.type !== "done") throw new Error("idle kernel: " + JSON.stringify(done));
    gflops.push(done.flops / done.compute_ms / 1e6);
  }
  worker.terminate();
  const tail = gflops.slice(Math.floor(tasks / 3)).sort((x, y) => x - y);
  return tail[Math.floor(tail.length / 2)];
}`;

// --- the job --------------------------------------------------------------------------------

/**
 * The two .npy files of a case and the whole multipart body of its submission, encoded before
 * any timing starts: the timed upload is the bytes on the wire, as a researcher's client sends
 * them, not Node's FormData encoding them (which took 0.1 s of a 0.15 s upload of 32 MiB).
 */
function inputs(job, seed) {
  const { m, k, n } = job;
  const a = randomMatrix(m, k, "f32", seed);
  const b = randomMatrix(k, n, "f32", seed + 1);
  const boundary = `bench-page-${seed}-${Date.now()}`;
  const field = (name, value) => `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
  const file = (name) =>
    `--${boundary}\r\nContent-Disposition: form-data; name="${name}"; filename="${name}.npy"\r\n` +
    "Content-Type: application/octet-stream\r\n\r\n";
  const body = Buffer.concat([
    Buffer.from(file("a")), encodeNpy(a, m, k), Buffer.from("\r\n" + file("b")), encodeNpy(b, k, n),
    Buffer.from("\r\n" + field("tile", job.tile) + field("name", `bench-page ${job.label}`) + `--${boundary}--\r\n`),
  ]);
  return { a, b, body, contentType: `multipart/form-data; boundary=${boundary}` };
}

/**
 * POSTs the encoded body with node:http in one write: Node's fetch (undici) took 95 ms for the
 * 32 MiB that node:http and curl send to the same server in 45.
 */
function submit(url, data) {
  return new Promise((resolve, reject) => {
    const headers = { "content-type": data.contentType, "content-length": data.body.length };
    const req = request(`${url}/api/jobs`, { method: "POST", headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode !== 201) reject(new Error(`submit: ${res.statusCode} ${text}`));
        else resolve(JSON.parse(text));
      });
    });
    req.on("error", reject);
    req.end(data.body);
  });
}

/**
 * One connection kept open for the polls: through `fetch` (undici) each poll cost this
 * script about 1 ms of CPU, and at one poll every 5 ms the script took 0.16–0.33 of the two
 * cores during the job, from the page it measures.
 */
const pollAgent = new Agent({ keepAlive: true, maxSockets: 1 });

function pollJson(url) {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: pollAgent }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) reject(new Error(`GET ${url}: ${res.statusCode} ${text}`));
        else resolve(JSON.parse(text));
      });
    });
    req.on("error", reject);
    req.end();
  });
}

async function waitDone(url, id, ms, { every = 5, signal } = {}) {
  const deadline = performance.now() + ms;
  for (;;) {
    if (signal?.aborted) return null;
    const job = await pollJson(`${url}/api/jobs/${id}`);
    if (job.status === "done") return job;
    if (job.status === "failed" || job.status === "cancelled") throw new Error(`job ${job.status}: ${job.error}`);
    if (performance.now() > deadline) throw new Error(`job not done in ${ms} ms: ${job.tasks_done}/${job.tasks_total}`);
    // Often by default, so that the poll adds little to the wall (2.5 ms on average).
    await new Promise((r) => setTimeout(r, every));
  }
}

// --- CPU from /proc -------------------------------------------------------------------------

/** CPU seconds (user + system) of `pid` and, with `tree`, of its live descendants. */
function cpuSeconds(pid, tree = false) {
  const stat = (p) => {
    try {
      const text = readFileSync(`/proc/${p}/stat`, "utf8");
      return text.slice(text.lastIndexOf(") ") + 2).split(" ");
    } catch {
      return null; // exited meanwhile
    }
  };
  const ticks = (f) => (f ? Number(f[11]) + Number(f[12]) : 0);
  let total = ticks(stat(pid));
  if (tree) {
    const parents = new Map();
    for (const entry of readdirSync("/proc")) if (/^\d+$/.test(entry)) parents.set(Number(entry), Number(stat(entry)?.[1]));
    const inTree = (p) => {
      for (let q = parents.get(p); q; q = parents.get(q)) if (q === pid) return true;
      return false;
    };
    for (const p of parents.keys()) if (p !== pid && inTree(p)) total += ticks(stat(p));
  }
  return total / 100;
}

// --- one case -------------------------------------------------------------------------------

async function runCase(browser, job, threads, { trace = false } = {}) {
  const dir = tempDir();
  const server = await startServer({ dbPath: join(dir, "brain.db") });
  let opened;
  try {
    const data = inputs(job, 17);
    opened = await openPage(browser, `${server.url}/`, threads);
    const { snap } = opened;
    const idleKernel = await opened.evaluate(`(${IDLE_KERNEL})(${JSON.stringify({ m: job.tile, k: job.k, n: job.tile, tasks: 12 })})`);
    await new Promise((r) => setTimeout(r, 300));
    const tracer = trace ? await startTrace(opened.cdp) : null;
    await opened.evaluate("globalThis.__benchReset(); performance.mark('bench-submit'); 0");
    const cpu0 = { server: cpuSeconds(server.proc.pid), browser: browser.pid ? cpuSeconds(browser.pid, true) : NaN, bench: process.cpuUsage() };
    const t0 = performance.now();
    const created = await submit(server.url, data);
    const tSubmitted = performance.now();
    // The page says when its threads have computed every tile; only then is the server asked,
    // every 5 ms, whether the job is done (its last results still going up, checked, stored).
    // Asking it throughout cost about 130 requests a run on the cores the page and the server
    // share: 0.1 of a core for this script, and some of the server's.
    // A slow poll beside it catches a job that fails or ends some other way.
    const slowly = new AbortController();
    const slow = waitDone(server.url, created.id, 600_000, { every: 250, signal: slowly.signal });
    await Promise.race([opened.evaluate(`globalThis.__benchComputed(${created.tasks_total})`), slow]);
    slowly.abort();
    slow.catch(() => {}); // settled or soon to be; the poll below reports the job's end
    await waitDone(server.url, created.id, 600_000);
    const wall = (performance.now() - t0) / 1000;
    const cpu = {
      server: (cpuSeconds(server.proc.pid) - cpu0.server) / wall,
      browser: browser.pid ? (cpuSeconds(browser.pid, true) - cpu0.browser) / wall : NaN,
      bench: ((u) => (u.user + u.system) / 1e6 / wall)(process.cpuUsage(cpu0.bench)),
    };
    await opened.evaluate("performance.mark('bench-done'); 0");
    const traced = tracer ? await tracer.stop() : null;
    const threadsSeen = (await opened.evaluate("globalThis.__benchThreads")).filter((t) => t.tiles > 0);
    // The job's phases on the page's clock, from the submission's first byte (within the few ms
    // of one `Runtime.evaluate`): when the first tile's kernel started and the last one ended.
    const pageT0 = await opened.evaluate("globalThis.__benchT0");
    const firstTile = (Math.min(...threadsSeen.map((t) => t.first)) - pageT0) / 1000;
    const lastTile = (Math.max(...threadsSeen.map((t) => t.last)) - pageT0) / 1000;
    const firstHanded = (Math.min(...threadsSeen.flatMap((t) => t.spans.map((span) => span[0]))) - pageT0) / 1000;
    const gaps = threadsSeen.map((t) => betweenTiles(t.spans));
    const waits = threadsSeen.map((t) => waitsOf(t.spans));
    const gapsMean = Object.fromEntries(Object.keys(gaps[0]).map((key) => [key, gaps.reduce((sum, g) => sum + g[key], 0) / gaps.length]));
    const { gflopsPerThread: shown, effectiveGflops: shownEffective, variant } = await snap();

    const result = await fetch(`${server.url}/api/jobs/${created.id}/result`);
    if (result.status !== 200) throw new Error(`result: ${result.status}`);
    const c = decodeNpy(new Uint8Array(await result.arrayBuffer()));
    if (c.rows !== job.m || c.cols !== job.n) throw new Error(`result is ${c.rows}×${c.cols}`);
    checkProduct(data.a, data.b, c.data, job.m, job.k, job.n);
    if (opened.errors.length) throw new Error(`page errors: ${opened.errors.join("; ")}`);

    const flops = 2 * job.m * job.k * job.n;
    const tiles = threadsSeen.reduce((s, t) => s + t.tiles, 0);
    const computeMs = threadsSeen.reduce((s, t) => s + t.computeMs, 0);
    const perThread = threadsSeen.map((t) => t.flops / t.computeMs / 1e6);
    const kernel = perThread.reduce((s, g) => s + g, 0) / perThread.length;
    const e2e = flops / wall / 1e9;
    // From the job's acceptance (the 201): the volunteer's side alone, as nothing can be
    // computed before the job exists.
    const onJob = flops / (wall - (tSubmitted - t0) / 1000) / 1e9;
    return {
      case: job.name, label: job.label, variant, m: job.m, k: job.k, n: job.n, tile: job.tile, threads,
      tasks: created.tasks_total, tiles, wall_s: wall, submit_s: (tSubmitted - t0) / 1000,
      first_handed_s: firstHanded, first_tile_s: firstTile, last_tile_s: lastTile, between_tiles_s: gapsMean, waits,
      e2e_gflops: e2e, kernel_gflops_per_thread: kernel, kernel_gflops_each: perThread,
      page_shows_gflops_per_thread: shown, page_shows_effective_gflops: shownEffective, idle_page_kernel_gflops: idleKernel, efficiency: e2e / (kernel * threads),
      job_gflops: onJob, job_efficiency: onJob / (kernel * threads),
      kernel_busy: computeMs / (wall * 1000 * threads), threads_used: threadsSeen.length,
      cores_server: cpu.server, cores_browser: cpu.browser, cores_bench: cpu.bench,
      trace: traced,
    };
  } finally {
    await opened?.close().catch(() => {});
    await server.kill();
    cleanup(dir);
  }
}

// --- tracing --------------------------------------------------------------------------------

const TRACE_CATEGORIES = [
  "toplevel", "devtools.timeline", "disabled-by-default-devtools.timeline", "blink.user_timing",
  "v8", "v8.execute", "v8.wasm", "disabled-by-default-v8.gc", "blink", "net", "loading",
];

/**
 * Starts Chrome's tracing on the page's browser. The events are kept in the browser until
 * `stop()` and then read as one stream (IO.read): streaming them during the run
 * (`ReportEvents`) would keep the DevTools pipe busy, a third of a core here, in the window.
 */
async function startTrace(cdp) {
  const complete = cdp.once("Tracing.tracingComplete");
  await cdp.send("Tracing.start", {
    transferMode: "ReturnAsStream",
    streamFormat: "json",
    traceConfig: { includedCategories: TRACE_CATEGORIES, recordMode: "recordAsMuchAsPossible" },
  });
  return {
    async stop() {
      await cdp.send("Tracing.end");
      const { stream } = await complete;
      const chunks = [];
      for (;;) {
        const { data, eof, base64Encoded } = await cdp.send("IO.read", { handle: stream, size: 1 << 22 });
        chunks.push(base64Encoded ? Buffer.from(data, "base64").toString("utf8") : data);
        if (eof) break;
      }
      await cdp.send("IO.close", { handle: stream });
      const parsed = JSON.parse(chunks.join(""));
      return Array.isArray(parsed) ? parsed : parsed.traceEvents;
    },
  };
}

/** Which group an event's name belongs to, for the summary. */
function groupOf(name) {
  if (/GC|Scavenge|MarkCompact|Sweep|Marking|Heap/i.test(name)) return "GC";
  if (/wasm/i.test(name)) return "wasm (compile, calls)";
  if (/Message|postMessage|Serialize|Deserialize|Clone/i.test(name)) return "messages between threads";
  if (/WebSocket|Socket|Resource|Network|Receive|Frame(?!Start)|DataReceived/i.test(name)) return "network";
  if (/Paint|Layout|Style|Layer|Composite|Animation|BeginFrame|UpdateLayoutTree|Commit|Raster|PrePaint/i.test(name)) return "rendering";
  if (/FunctionCall|EvaluateScript|v8\.|V8\.|Compile|Parse|Script|TimerFire|FireAnimationFrame|EventDispatch|Microtask|RunMicrotasks/i.test(name)) return "script";
  if (/^(RunTask|ThreadControllerImpl::RunTask|ThreadPool_RunTask)$/.test(name)) return "untraced work in a task";
  return "other";
}

/**
 * Per thread of the renderer: busy time (the union of top-level events) inside the job's
 * window, and self time by event name and by group. B/E pairs are turned into spans first.
 */
function breakdown(events) {
  const names = new Map(); // "pid:tid" -> thread name
  for (const e of events) if (e.ph === "M" && e.name === "thread_name") names.set(`${e.pid}:${e.tid}`, e.args?.name ?? "?");
  const mark = (name) => events.find((e) => e.name === name && e.cat?.includes("blink.user_timing"))?.ts;
  const from = mark("bench-submit"), to = mark("bench-done");
  if (from === undefined || to === undefined) throw new Error("the trace lacks the bench-submit/bench-done marks");

  const spans = new Map(); // key -> [{name, ts, end}]
  const open = new Map(); // key -> stack of B events
  for (const e of events) {
    const key = `${e.pid}:${e.tid}`;
    if (e.ph === "X" && e.dur > 0) (spans.get(key) ?? spans.set(key, []).get(key)).push({ name: e.name, ts: e.ts, end: e.ts + e.dur });
    else if (e.ph === "B") (open.get(key) ?? open.set(key, []).get(key)).push(e);
    else if (e.ph === "E") {
      const b = open.get(key)?.pop();
      if (b) (spans.get(key) ?? spans.set(key, []).get(key)).push({ name: b.name, ts: b.ts, end: e.ts });
    }
  }
  const windowUs = to - from;
  const threads = [];
  for (const [key, list] of spans) {
    const clipped = list
      .map((s) => ({ ...s, ts: Math.max(s.ts, from), end: Math.min(s.end, to) }))
      .filter((s) => s.end > s.ts)
      .sort((x, y) => x.ts - y.ts || y.end - x.end);
    if (clipped.length === 0) continue;
    const self = new Map();
    const stack = [];
    let busy = 0;
    for (const s of clipped) {
      while (stack.length && stack.at(-1).end <= s.ts) stack.pop();
      const parent = stack.at(-1);
      if (parent && s.end <= parent.end) parent.child += s.end - s.ts;
      else if (!parent) busy += s.end - s.ts;
      else continue; // overlaps its parent's end without nesting: an async slice, left out
      s.child = 0;
      stack.push(s);
    }
    for (const s of clipped) if (s.child !== undefined) self.set(s.name, (self.get(s.name) ?? 0) + (s.end - s.ts - s.child));
    const groups = new Map();
    for (const [name, us] of self) groups.set(groupOf(name), (groups.get(groupOf(name)) ?? 0) + us);
    const top = [...self].sort((x, y) => y[1] - x[1]).slice(0, 12).map(([name, us]) => ({ name, ms: us / 1000 }));
    threads.push({
      thread: names.get(key) ?? key, key, busy_ms: busy / 1000, busy_share: busy / windowUs,
      groups: Object.fromEntries([...groups].sort((x, y) => y[1] - x[1]).map(([g, us]) => [g, us / 1000])),
      top,
    });
  }
  threads.sort((x, y) => y.busy_ms - x.busy_ms);
  return { window_ms: windowUs / 1000, threads: threads.filter((t) => t.busy_ms >= 1) };
}

/** One more run of `job` under tracing: prints and writes the breakdown. */
async function traced(browser, job, threads) {
  const r = await runCase(browser, job, threads, { trace: true });
  const b = breakdown(r.trace);
  mkdirSync(OUT, { recursive: true });
  const stamp = `${job.name}-${threads}t`;
  writeFileSync(join(OUT, `trace-${stamp}.json`), JSON.stringify({ traceEvents: r.trace }));
  writeFileSync(join(OUT, `breakdown-${stamp}.json`), JSON.stringify({ ...r, trace: undefined, breakdown: b }, null, 2) + "\n");
  const computeMs = r.kernel_busy * r.wall_s * 1000 * threads;
  const main = b.threads.find((th) => th.thread === "CrRendererMain");
  const workers = b.threads.filter((th) => th.thread === "DedicatedWorker thread");
  console.log(
    `\ntraced: ${threads} thread${threads > 1 ? "s" : ""}, ${job.label}: end-to-end ${f1(r.e2e_gflops)} GFLOP/s under tracing ` +
      `(wall ${r.wall_s.toFixed(2)} s); in the job's window of ${(b.window_ms / 1000).toFixed(2)} s: ` +
      `main thread busy ${pct(main?.busy_share ?? 0)}, compute threads busy ${workers.map((w) => pct(w.busy_share)).join(" and ")} ` +
      `of which the kernel (Σ compute_ms ${Math.round(computeMs)} ms) ${pct(computeMs / b.window_ms / threads)}`,
  );
  for (const th of b.threads.slice(0, 6)) {
    const groups = Object.entries(th.groups).map(([g, ms]) => `${g} ${Math.round(ms)}`).join(", ");
    console.log(`  ${th.thread.padEnd(26)} busy ${pct(th.busy_share).padStart(5)} (${Math.round(th.busy_ms)} ms); ms by group: ${groups}`);
    console.log(`    top (self ms): ${th.top.slice(0, 6).map((e) => `${e.name} ${Math.round(e.ms)}`).join(", ")}`);
  }
  console.log(`  written: ${join(OUT, `breakdown-${stamp}.json`).replace(ROOT + "/", "")} and trace-${stamp}.json (Perfetto, chrome://tracing)`);
}

// --- the anchor -----------------------------------------------------------------------------

/** The same kernel build in Node, on each tile shape of the run (kernel-anchor.mjs). */
function anchor(variant, tileShapes) {
  const pkg = join(ROOT, `worker-wasm/pkg-${variant}`);
  if (!existsSync(join(pkg, "worker_wasm_bg.wasm"))) return { error: `no ${pkg} (make wasm)` };
  const run = spawnSync(process.execPath, ["--experimental-wasm-relaxed-simd", join(ROOT, "web/bench/kernel-anchor.mjs"), pkg, ...tileShapes], { encoding: "utf8" });
  if (run.status !== 0) return { error: run.stderr.trim() };
  return JSON.parse(run.stdout.trim().split("\n").at(-1));
}

// --- main -----------------------------------------------------------------------------------

const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : String(x));
const pct = (x) => `${Math.round(x * 100)} %`;
const rev = spawnSync("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).stdout.trim();
const dirty = spawnSync("git", ["-C", ROOT, "status", "--porcelain", "--untracked-files=no"], { encoding: "utf8" }).stdout.trim() ? "+changes" : "";
const load = spawnSync("cat", ["/proc/loadavg"], { encoding: "utf8" }).stdout.split(" ").slice(0, 3).join(" ");
console.log(`bench-page: build ${rev}${dirty}, ${new Date().toISOString()}, load ${load}, server ${SERVER_BIN.replace(ROOT + "/", "")}, driver ${opts.driver}`);

const browser = await launch(opts.driver);
const version = browser.version;
const results = [];
try {
  for (const job of shapes) {
    for (const threads of threadCounts) {
      const runs = [];
      for (let i = 0; i < repeat; i++) runs.push(await runCase(browser, job, threads));
      // The run with the median wall time stands for the case; the others give the spread.
      runs.sort((x, y) => x.wall_s - y.wall_s);
      const r = { ...runs[Math.floor((runs.length - 1) / 2)], runs: runs.length, e2e_range: [runs.at(-1).e2e_gflops, runs[0].e2e_gflops] };
      results.push(r);
      const spread = runs.length > 1 ? `, median of ${runs.length}: end-to-end ${f1(r.e2e_range[0])}–${f1(r.e2e_range[1])}` : "";
      console.log(
        `page, ${threads} thread${threads > 1 ? "s" : ""}, ${r.label}: end-to-end ${f1(r.e2e_gflops)} GFLOP/s, ` +
          `kernel ${f1(r.kernel_gflops_per_thread)} GFLOP/s per thread, efficiency ${pct(r.efficiency)}; ` +
          `from the job's acceptance ${f1(r.job_gflops)} GFLOP/s, efficiency ${pct(r.job_efficiency)} ` +
          `(wall ${r.wall_s.toFixed(2)} s: upload ${r.submit_s.toFixed(2)}, to the first kernel ${(r.first_tile_s - r.submit_s).toFixed(2)} ` +
          `(the first task reaches the page ${(r.first_handed_s - r.submit_s).toFixed(3)}, its thread ${(r.first_tile_s - r.first_handed_s).toFixed(3)}), ` +
          `tiles ${(r.last_tile_s - r.first_tile_s).toFixed(2)} (per thread: computing ${r.between_tiles_s.computing.toFixed(2)}, ` +
          `waiting for work ${r.between_tiles_s.waiting_for_work.toFixed(2)}, handing over ${r.between_tiles_s.handing_over.toFixed(2)}), after the last tile ${(r.wall_s - r.last_tile_s).toFixed(2)}; kernel busy ${pct(r.kernel_busy)}, ` +
          `${r.tiles} tiles, page shows ${f1(r.page_shows_gflops_per_thread)} per thread and ${f1(r.page_shows_effective_gflops)} effective, idle kernel ${f1(r.idle_page_kernel_gflops)} GFLOP/s, ` +
          `cores busy: browser ${Number.isNaN(r.cores_browser) ? "?" : r.cores_browser.toFixed(2)}, server ${r.cores_server.toFixed(2)}, this script ${r.cores_bench.toFixed(2)}${spread})`,
      );
      if (opts.waits)
        for (const [t, list] of r.waits.entries())
          console.log(`  thread ${t + 1} waited for work: ${list.map(([i, ms, bytes]) => `${ms.toFixed(1)} ms before its tile ${i + 1} (+${(bytes / 2 ** 20).toFixed(0)} MiB)`).join(", ") || "never over 2 ms"} (its tiles counted from 1)`);
    }
  }
  if (opts.trace || opts["trace-case"]) {
    for (const spec of (opts["trace-case"] ?? `${shapes[0].name}/1`).split(",")) {
      const [name, t] = spec.split("/");
      await traced(browser, parseCase(name), Number(t || 1));
    }
  }
} finally {
  await browser.close();
}

if (!opts["no-anchor"]) {
  // The page picks the fastest build Chromium validates; the anchor times that same file.
  const pageVariant = results[0]?.variant ?? "relaxed";
  const tileShapes = [...new Set(shapes.map((j) => `${j.tile}x${j.k}x${j.tile}`))];
  const a = anchor(pageVariant, tileShapes);
  if (a.error) console.log(`anchor: ${a.error}`);
  else {
    for (const t of a.tiles) {
      const inPage = results.filter((r) => r.k === t.k && r.tile === t.m);
      const during = inPage.map((r) => `${r.threads} thr ${pct(r.kernel_gflops_per_thread / t.gflops)}`).join(", ");
      const idle = inPage.map((r) => pct(r.idle_page_kernel_gflops / t.gflops)).join(", ");
      console.log(
        `anchor: Node ${process.version}, ${a.variant} build, one tile ${t.m}×${t.k}·${t.k}×${t.n}: ${f1(t.gflops)} GFLOP/s; ` +
          `the page's kernel as a share of it: during the job ${during}; alone on the idle page ${idle}`,
      );
    }
  }
  results.anchor = a;
}
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, "results.json"), JSON.stringify({ rev: rev + dirty, chromium: version, when: new Date().toISOString(), load, results: results.map((r) => ({ ...r, trace: undefined })), anchor: results.anchor }, null, 2) + "\n");
