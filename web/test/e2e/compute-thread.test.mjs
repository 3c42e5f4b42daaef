// The compute thread (web/dist/compute-worker.js, whose loop is worker-wasm/src/thread.rs)
// driven by its messages alone, in Chromium, for every kernel build shipped: it warms up and
// says ready, computes a tile in row bands below full duty (a duty set while it loaded
// included), answers a cancelled task with no product, whether cancelled before it started
// or between bands, and reports bad input as an error that names the task. No timing is
// asserted: the machine may be busy.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startServer, launchBrowser, tempDir, cleanup, WEB_DIR } from "./helpers.mjs";

setTimeout(() => {
  console.error("browser tests: global time limit reached");
  process.exit(1);
}, 5 * 60_000).unref();

const shipped = Object.keys(JSON.parse(readFileSync(join(WEB_DIR, "wasm-manifest.json"), "utf8")).variants);

describe("the compute thread in Chromium", { timeout: 4 * 60_000 }, () => {
  let dir, server, browser, page;

  before(async () => {
    dir = tempDir();
    server = await startServer({ dbPath: join(dir, "brain.db") });
    browser = await launchBrowser();
    page = await (await browser.newContext()).newPage();
    await page.goto(server.url + "/");
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.kill();
    if (dir) cleanup(dir);
  });

  for (const variant of shipped) {
    test(`${variant}: ready, banded product, cancellation, errors`, { timeout: 120_000 }, async () => {
      const r = await page.evaluate(async (variant) => {
        const manifest = await (await fetch("wasm-manifest.json")).json();
        const module = await WebAssembly.compile(await (await fetch(manifest.variants[variant].file)).arrayBuffer());
        const worker = new Worker("compute-worker.js");
        const inbox = [];
        let wake = null;
        worker.onmessage = (e) => {
          inbox.push(e.data);
          wake?.();
        };
        const next = async () => {
          while (!inbox.length) await new Promise((r) => (wake = r));
          return inbox.shift();
        };
        const out = {};
        try {
          // The duty message comes while the module loads: the thread must apply it.
          worker.postMessage({ type: "init", variant, module, duty: 1, thread: 0 });
          worker.postMessage({ type: "duty", duty: 0.2 });
          out.ready = await next();

          // f64, k = n = 1024: a band fits duty × 150 ms, so below full duty a tile of 2048
          // rows takes several bands on any machine slower than ~500 GFLOP/s per thread.
          const [m, k, n] = [2048, 1024, 1024];
          const a = new Float64Array(m * k).map((_, i) => ((i * 7919) % 2001) / 1000 - 1);
          const b = new Float64Array(k * n).map((_, i) => ((i * 104729) % 2001) / 1000 - 1);
          const task = (task_id, extra = {}) => ({
            type: "task",
            task: { task_id, dtype: "f64", m, k, n, a: a.buffer.slice(0), b: b.buffer.slice(0), ...extra },
          });
          const clock = () => performance.timeOrigin + performance.now();
          const posted = clock();
          worker.postMessage(task("banded"));
          const done = await next();
          out.clock = { posted, started: done.started_at, ended: done.ended_at, received: clock() };
          const c = new Float64Array(done.c);
          let worst = 0;
          for (const [i, j] of [[0, 0], [1, 1023], [700, 17], [1500, 600], [2047, 1023]]) {
            let want = 0;
            for (let p = 0; p < k; p++) want += a[i * k + p] * b[p * n + j];
            worst = Math.max(worst, Math.abs(c[i * n + j] - want) / (1 + Math.abs(want)));
          }
          out.banded = { type: done.type, task_id: done.task_id, bytes: done.c.byteLength, flops: done.flops, ms: done.compute_ms, worst };

          worker.postMessage({ type: "cancel", task_id: 41 });
          worker.postMessage(task(41));
          out.cancelledFirst = await next();
          worker.postMessage({ type: "duty", duty: 0.05 });
          worker.postMessage(task(42));
          worker.postMessage({ type: "cancel", task_id: 42 });
          out.cancelledBetween = await next();

          worker.postMessage({ type: "duty", duty: 1 });
          const ones = new Float32Array(6).fill(1).buffer;
          out.small = [];
          for (const t of [
            { task_id: "short", dtype: "f32", m: 2, k: 3, n: 2, a: ones, b: new ArrayBuffer(8) },
            { task_id: "dtype", dtype: "f16", m: 2, k: 3, n: 2, a: ones, b: ones },
            { task_id: "ok", dtype: "f32", m: 2, k: 3, n: 2, a: ones, b: ones },
          ]) {
            worker.postMessage({ type: "task", task: t });
            const d = await next();
            out.small.push({ type: d.type, task_id: d.task_id, error: d.error, c: d.c ? Array.from(new Float32Array(d.c)) : d.c });
          }

          // Panels kept by key: sent once with `_keep`, then only named; forgotten on demand.
          const twos = new Float32Array(6).fill(2).buffer;
          const shape = { dtype: "f32", m: 2, k: 3, n: 2, a_key: "j:a:0", b_key: "j:b:0" };
          out.kept = [];
          for (const msg of [
            { type: "task", task: { ...shape, task_id: "keep", a: ones, b: twos, a_keep: true, b_keep: true } },
            { type: "task", task: { ...shape, task_id: "held" } },
            { type: "task", task: { ...shape, task_id: "sent beside", a: new Float32Array(6).fill(3).buffer } },
            { type: "forget", keys: ["j:a:0"] },
            { type: "task", task: { ...shape, task_id: "forgotten" } },
            { type: "forget_all" },
            { type: "task", task: { ...shape, task_id: "cleared", a: ones } },
            { type: "task", task: { ...shape, task_id: "b kept", a: ones, b: twos, b_keep: true } },
            // Cancelled before it starts: what it carried to keep is kept all the same.
            { type: "cancel", task_id: "kept, cancelled" },
            { type: "task", task: { ...shape, task_id: "kept, cancelled", a: ones, a_keep: true } },
            { type: "task", task: { ...shape, task_id: "both held" } },
            { type: "task", task: { ...shape, task_id: "other shape", k: 1, a: ones.slice(0, 8) } },
          ]) {
            worker.postMessage(msg);
            if (msg.type !== "task") continue;
            const d = await next();
            out.kept.push({ type: d.type, task_id: d.task_id, error: d.error, c: d.c ? Array.from(new Float32Array(d.c)) : d.c });
          }

          // A task waiting behind another keeps the panels it named when it was handed over,
          // even if the page then says to forget them (its cache started afresh). The first
          // task rests between bands (duty 0.2), so the two messages after it arrive while it
          // runs and the second task waits its turn.
          worker.postMessage({ type: "duty", duty: 0.2 });
          const rows = 256;
          worker.postMessage({ type: "task", task: { task_id: "ahead", dtype: "f64", m: rows, k, n, a: a.buffer.slice(0, rows * k * 8), b: b.buffer.slice(0) } });
          worker.postMessage({ type: "task", task: { ...shape, task_id: "waiting" } });
          worker.postMessage({ type: "forget_all" });
          out.queued = [];
          for (let i = 0; i < 2; i++) {
            const d = await next();
            out.queued.push({ type: d.type, task_id: d.task_id, error: d.error, c: d.c && d.task_id === "waiting" ? Array.from(new Float32Array(d.c)) : undefined });
          }
          worker.postMessage({ type: "duty", duty: 1 });
          worker.postMessage({ type: "task", task: { ...shape, task_id: "after" } });
          const after = await next();
          out.queued.push({ type: after.type, task_id: after.task_id, error: after.error });
        } finally {
          worker.terminate();
        }
        return out;
      }, variant);

      assert.equal(r.ready.type, "ready", JSON.stringify(r.ready));
      assert.equal(r.ready.info.variant, variant === "simd" ? "simd128" : variant);
      assert.ok(r.ready.gflops > 0, "a first speed estimate");
      assert.deepEqual(
        { ...r.banded, ms: undefined, worst: undefined },
        { type: "done", task_id: "banded", bytes: 2048 * 1024 * 8, flops: 2 * 2048 * 1024 * 1024, ms: undefined, worst: undefined },
      );
      assert.ok(r.banded.ms > 0);
      // The task's start and end, on the clock the page and its threads share: within the
      // page's own view of the task, and at least its compute time apart (duty 0.2 rests).
      // A millisecond either way: each context's clock is coarsened on its own (100 µs).
      const { posted, started, ended, received } = r.clock;
      const ok = posted - 1 <= started && started < ended && ended <= received + 1;
      assert.ok(ok, JSON.stringify(r.clock));
      assert.ok(ended - started >= r.banded.ms, `${ended - started} ms against compute ${r.banded.ms}`);
      assert.ok(r.banded.worst < 1e-12, `largest relative error ${r.banded.worst}`);
      assert.deepEqual(r.cancelledFirst, { type: "done", task_id: 41, c: null, compute_ms: 0, flops: 0 });
      assert.deepEqual(r.cancelledBetween, { type: "done", task_id: 42, c: null, compute_ms: 0, flops: 0 });
      assert.deepEqual(r.small, [
        { type: "error", task_id: "short", error: "f32 2x3x2: operands have 24 and 8 bytes, expected 24 and 24", c: undefined },
        { type: "error", task_id: "dtype", error: 'f16 2x3x2: dtype must be "f32" or "f64", not "f16"', c: undefined },
        { type: "done", task_id: "ok", error: undefined, c: [3, 3, 3, 3] },
      ]);
      assert.deepEqual(r.kept, [
        { type: "done", task_id: "keep", error: undefined, c: [6, 6, 6, 6] },
        { type: "done", task_id: "held", error: undefined, c: [6, 6, 6, 6] },
        { type: "done", task_id: "sent beside", error: undefined, c: [18, 18, 18, 18] },
        { type: "error", task_id: "forgotten", error: "f32 2x3x2: panel j:a:0 is not held by this thread", c: undefined },
        { type: "error", task_id: "cleared", error: "f32 2x3x2: panel j:b:0 is not held by this thread", c: undefined },
        { type: "done", task_id: "b kept", error: undefined, c: [6, 6, 6, 6] },
        { type: "done", task_id: "kept, cancelled", error: undefined, c: null },
        { type: "done", task_id: "both held", error: undefined, c: [6, 6, 6, 6] },
        { type: "error", task_id: "other shape", error: "f32 2x1x2: panel j:b:0 is not held by this thread", c: undefined },
      ]);
      assert.deepEqual(r.queued, [
        { type: "done", task_id: "ahead", error: undefined, c: undefined },
        { type: "done", task_id: "waiting", error: undefined, c: [6, 6, 6, 6] },
        { type: "error", task_id: "after", error: "f32 2x3x2: panel j:a:0 is not held by this thread" },
      ]);
    });
  }
});
