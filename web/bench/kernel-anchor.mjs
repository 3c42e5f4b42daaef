// The anchor of the page benchmark (page.mjs): the same kernel build the page ran, timed in
// Node (V8, Chromium's engine) on one thread through `runTask`, the call a compute thread
// makes, on the tile shapes the page's jobs were cut into. Prints one JSON line,
// `{variant, tiles: [{m, k, n, gflops}]}`, so a browser figure can be read as a share of it
// on any machine (see ../shared/STACK-NOTES.md: speeds are ratios to an anchor).
//
//   node [--experimental-wasm-relaxed-simd] kernel-anchor.mjs <pkg dir> MxKxN...
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { time } from "../../worker-wasm/bench/timing.mjs";

const [dirArg, ...shapes] = process.argv.slice(2);
const dir = resolve(dirArg);
const mod = await import(pathToFileURL(join(dir, "worker_wasm.js")));
mod.initSync({ module: readFileSync(join(dir, "worker_wasm_bg.wasm")) });

const fill = (len) => {
  const x = new Float32Array(len);
  for (let i = 0; i < len; i++) x[i] = ((i * 7919) % 2001) / 1000 - 1;
  return new Uint8Array(x.buffer);
};

mod.warmUp(300);
const tiles = [];
for (const shape of shapes) {
  const [m, k, n] = shape.split("x").map(Number);
  const a = fill(m * k), b = fill(k * n);
  const ms = time(() => mod.runTask("f32", a, b, m, k, n), 5, 150);
  tiles.push({ m, k, n, gflops: (2 * m * k * n) / ms / 1e6 });
}
console.log(JSON.stringify({ variant: mod.kernelInfo().variant, tiles }));
