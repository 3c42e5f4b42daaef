// A compute thread for the load harness's `wasm` volunteers: loads the real worker-wasm module
// (the page's build) into a Node worker thread, warms it up, and runs each task it is handed.
// The volunteer's panel cache lives here, beside the kernel: a panel crosses from the socket's
// thread once, when it arrives, and every later task on it names it by key, so the event loop
// copies nothing per task. Timing around the kernel call alone is the "pure kernel time" the
// efficiency figure compares against.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parentPort, workerData } from "node:worker_threads";

const mod = await import(pathToFileURL(join(workerData.pkg, "worker_wasm.js")));
mod.initSync({ module: readFileSync(join(workerData.pkg, "worker_wasm_bg.wasm")) });
mod.warmUp(300);
parentPort.postMessage({ ready: true, info: mod.kernelInfo() });

/** Panels by the keys the server gave them; the server's `evict` lists keep it within budget. */
const panels = new Map();

/** This thread's time on a CPU so far, in ms (nanoseconds in /proc/thread-self/schedstat). */
const onCpuMs = () => Number(readFileSync("/proc/thread-self/schedstat", "utf8").split(" ")[0]) / 1e6;

parentPort.on("message", ({ id, dtype, a, b, aKey, bKey, keep, evict, m, k, n, alone, forMs, keepOnly }) => {
  // A new connection: the server counts on these panels and no others.
  if (keepOnly) {
    const kept = new Set(keepOnly);
    for (const key of [...panels.keys()]) if (!kept.has(key)) panels.delete(key);
    return;
  }
  if (alone) {
    // The same shape with nothing else running: the median of `alone` calls, in ms.
    const bytes = (len) => new Uint8Array(Float32Array.from({ length: len }, (_, i) => ((i % 97) - 48) / 64).buffer);
    const [x, y] = [bytes(m * k), bytes(k * n)];
    if (forMs) {
      // As many as fit in `forMs`, for threads timed together: the mean is their share of the
      // cores, which a median of a few short runs that hardly overlap would not show.
      const t0 = performance.now();
      let count = 0;
      for (; count < alone || performance.now() - t0 < forMs; count++) mod.runTask("f32", x, y, m, k, n);
      return parentPort.postMessage({ id, ms: (performance.now() - t0) / count });
    }
    const times = [];
    for (let i = 0; i < alone; i++) {
      const t0 = performance.now();
      mod.runTask("f32", x, y, m, k, n);
      times.push(performance.now() - t0);
    }
    return parentPort.postMessage({ id, ms: times.sort((p, q) => p - q)[Math.floor(alone / 2)] });
  }
  a ??= panels.get(aKey);
  b ??= panels.get(bKey);
  if (keep) {
    panels.set(aKey, a);
    panels.set(bKey, b);
    for (const key of evict ?? []) panels.delete(key);
  }
  const [t0, cpu0] = [performance.now(), onCpuMs()];
  const c = mod.runTask(dtype, a, b, m, k, n);
  const [ms, cpuMs] = [performance.now() - t0, onCpuMs() - cpu0];
  parentPort.postMessage({ id, c, ms, cpuMs }, [c.buffer]);
});
