// Kernel benchmark in Node (V8, the engine of Chromium), single thread. Prints GFLOP/s per
// size and dtype for one wasm build, and a naive JavaScript loop measured in the same run.
//   node [--experimental-wasm-relaxed-simd] bench.mjs <pkg dir> [--naive]
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { time } from "./timing.mjs";

const dir = resolve(process.argv[2] ?? "../pkg-simd");
const mod = await import(pathToFileURL(join(dir, "worker_wasm.js")));
mod.initSync({ module: readFileSync(join(dir, "worker_wasm_bg.wasm")) });
const info = mod.kernelInfo();

const fill = (T, len) => {
  const x = new T(len);
  for (let i = 0; i < len; i++) x[i] = ((i * 7919) % 2001) / 1000 - 1;
  return x;
};
const gflops = (m, k, n, ms) => (2 * m * k * n) / ms / 1e6;

const rows = [];
// First call: V8's baseline tier, before the optimising compiler has taken over.
{
  const a = fill(Float32Array, 512 * 512), b = fill(Float32Array, 512 * 512);
  const t0 = performance.now();
  mod.matmulF32(a, b, 512, 512, 512);
  rows.push(["f32", "512 first call", gflops(512, 512, 512, performance.now() - t0)]);
}
mod.warmUp(300);
for (const [dtype, T, fn] of [["f32", Float32Array, mod.matmulF32], ["f64", Float64Array, mod.matmulF64]]) {
  for (const s of [256, 512, 1024]) {
    const a = fill(T, s * s), b = fill(T, s * s);
    rows.push([dtype, `${s}³`, gflops(s, s, s, time(() => fn(a, b, s, s, s)))]);
  }
}
// The shapes the scheduler sends: 256×k · k×256, as bytes through runTask.
for (const k of [64, 1024, 4096]) {
  const a = new Uint8Array(fill(Float32Array, 256 * k).buffer), b = new Uint8Array(fill(Float32Array, k * 256).buffer);
  rows.push(["f32", `task 256×${k}·${k}×256`, gflops(256, k, 256, time(() => mod.runTask("f32", a, b, 256, k, 256)))]);
}
{
  const s = 509; // not a multiple of the micro-kernel
  const a = fill(Float32Array, s * s), b = fill(Float32Array, s * s);
  rows.push(["f32", `${s}³ (odd)`, gflops(s, s, s, time(() => mod.matmulF32(a, b, s, s, s)))]);
}
if (process.argv.includes("--naive")) {
  const s = 256;
  const a = fill(Float32Array, s * s), b = fill(Float32Array, s * s);
  const naive = () => {
    const c = new Float32Array(s * s);
    for (let i = 0; i < s; i++)
      for (let p = 0; p < s; p++) {
        const x = a[i * s + p];
        for (let j = 0; j < s; j++) c[i * s + j] += x * b[p * s + j];
      }
    return c;
  };
  rows.push(["f32", "256³ naive JavaScript loop", gflops(s, s, s, time(naive))]);
}
console.log(`\n${info.variant} build (${dir.split("/").pop()}, simd=${info.simd}, relaxed=${info.relaxed_simd})`);
for (const [dtype, what, g] of rows) console.log(`  ${dtype}  ${what.padEnd(28)} ${g.toFixed(1).padStart(6)} GFLOP/s`);
