// One compute thread: a dedicated Web Worker with its own instance of the worker-wasm
// module. It never touches the network; the page's single Socket.io connection (on the UI
// thread, which never computes and so always answers pings) hands it tasks with a copy of
// their panels (the page's panel cache keeps the originals), and it transfers the product back.
//
// Messages in:  {type:"init", variant, module, thread} · {type:"task", task} ·
//               {type:"duty", duty} · {type:"cancel", task_id}
// Messages out: {type:"ready", info, gflops} · {type:"done", task_id, c, compute_ms, flops} ·
//               {type:"error", task_id, error} · {type:"fatal", error}

import { variants } from "brain:wasm-variants";
import { bandRows, restAfter, parseDuty } from "./duty.js";
import { SpeedMeter, taskFlops } from "./stats.js";

let api = null;
let duty = 1;
const speed = new SpeedMeter();
const cancelled = new Set();
// Tasks run one at a time; messages that arrive meanwhile (duty, cancel) are handled
// between row bands, while the thread rests.
let chain = Promise.resolve();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

self.onmessage = (event) => {
  const msg = event.data;
  switch (msg.type) {
    case "init":
      init(msg).catch((e) => self.postMessage({ type: "fatal", error: String(e?.message ?? e) }));
      break;
    case "task":
      chain = chain.then(() => run(msg.task));
      break;
    case "duty":
      duty = parseDuty(msg.duty);
      break;
    case "cancel":
      cancelled.add(msg.task_id);
      break;
  }
};

async function init({ variant, module, duty: d }) {
  const build = variants[variant];
  if (!build) throw new Error(`this page was built without the ${variant} kernel`);
  duty = parseDuty(d);
  await build.init({ module_or_path: module });
  api = build.api;
  const info = api.kernelInfo();
  // Warm up: the kernel's own warm-up (first calls pay for lazy compilation tiers and
  // memory growth), then a timed product for a first speed estimate before real tiles.
  const warm = api.warmUp ?? api.warmup ?? api.warm_up;
  if (typeof warm === "function") warm();
  const size = 192;
  const a = new Float32Array(size * size).map((_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  const bytes = new Uint8Array(a.buffer);
  api.runTask("f32", bytes, bytes, size, size, size);
  const t0 = performance.now();
  const reps = 3;
  for (let r = 0; r < reps; r++) api.runTask("f32", bytes, bytes, size, size, size);
  const ms = performance.now() - t0;
  speed.add(reps * taskFlops(size, size, size), ms);
  self.postMessage({ type: "ready", info: plain(info), gflops: speed.gflops });
}

async function run(task) {
  const { task_id: id, dtype, m, k, n } = task;
  try {
    const c = await compute(task);
    if (c === null) {
      self.postMessage({ type: "done", task_id: id, c: null, compute_ms: 0, flops: 0 });
      return;
    }
    self.postMessage(
      { type: "done", task_id: id, c: c.buffer, compute_ms: c.ms, flops: taskFlops(m, k, n), gflops: speed.gflops },
      [c.buffer],
    );
  } catch (e) {
    self.postMessage({ type: "error", task_id: id, error: `${dtype} ${m}x${k}x${n}: ${e?.message ?? e}` });
  } finally {
    cancelled.delete(id);
  }
}

/** Computes C for a task, in row bands at a duty below 100 %. Returns null if cancelled. */
async function compute({ task_id: id, dtype, m, k, n, a, b }) {
  const size = dtype === "f64" ? 8 : 4;
  const aBytes = new Uint8Array(a);
  const bBytes = new Uint8Array(b);
  if (aBytes.length !== m * k * size || bBytes.length !== k * n * size) {
    throw new Error(`operands have ${aBytes.length} and ${bBytes.length} bytes, expected ${m * k * size} and ${k * n * size}`);
  }
  let busy = 0;
  let row = 0;
  let out = null;
  while (row < m) {
    if (cancelled.has(id)) return null;
    const rows = Math.min(m - row, bandRows(m, k, n, speed.gflops, duty));
    const t0 = performance.now();
    const band = api.runTask(dtype, aBytes.subarray(row * k * size, (row + rows) * k * size), bBytes, rows, k, n);
    const dt = performance.now() - t0;
    busy += dt;
    speed.add(taskFlops(rows, k, n), dt);
    if (rows === m) {
      // The whole tile in one call: wasm-bindgen returned a fresh copy; send it as is.
      out = band.byteOffset === 0 && band.byteLength === band.buffer.byteLength ? band : band.slice();
    } else {
      out ??= new Uint8Array(m * n * size);
      out.set(band, row * n * size);
    }
    row += rows;
    const rest = restAfter(dt, duty);
    if (rest > 0) await sleep(rest);
  }
  out.ms = busy;
  return out;
}

/** kernelInfo() may be a wasm-bindgen class or a plain object; send plain data. */
function plain(info) {
  if (!info || typeof info !== "object") return { variant: String(info) };
  const out = {};
  for (const key of ["version", "simd", "relaxed_simd", "variant"]) {
    const v = info[key];
    out[key] = typeof v === "function" ? v.call(info) : v;
  }
  return out;
}
