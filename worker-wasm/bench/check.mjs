// Checks one wasm build against a plain f64 loop over awkward shapes (edges of every register
// tile, k across the k-block, 1×k·k×1, tall-thin, short-wide), through each JavaScript entry
// point. The wasm-bindgen tests cover the simd128 build; this covers pkg-relaxed and
// pkg-scalar too, as the page loads them. Exits non-zero on the first wrong entry.
//   node [--experimental-wasm-relaxed-simd] check.mjs <pkg dir>
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const dir = resolve(process.argv[2]);
const mod = await import(pathToFileURL(join(dir, "worker_wasm.js")));
mod.initSync({ module: readFileSync(join(dir, "worker_wasm_bg.wasm")) });
const info = mod.kernelInfo();

let seed = 7;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const shapes = [[1, 1, 1], [1, 300, 1], [3, 1, 13], [5, 7, 9], [13, 257, 25], [37, 513, 11], [130, 64, 7], [2, 40, 300], [121, 260, 49]];
let checked = 0;
for (const [dtype, T, fn, eps] of [["f32", Float32Array, mod.matmulF32, 1.2e-7], ["f64", Float64Array, mod.matmulF64, 2.3e-16]]) {
  for (const [m, k, n] of shapes) {
    const a = T.from({ length: m * k }, rand), b = T.from({ length: k * n }, rand);
    const viaBytes = new T(mod.runTask(dtype, new Uint8Array(a.buffer), new Uint8Array(b.buffer), m, k, n).buffer);
    for (const c of [fn(a, b, m, k, n), viaBytes])
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let want = 0, scale = 0;
          for (let p = 0; p < k; p++) {
            want += a[i * k + p] * b[p * n + j];
            scale += Math.abs(a[i * k + p] * b[p * n + j]);
          }
          const got = c[i * n + j];
          if (!(Math.abs(got - want) <= 2 * k * eps * scale + 1e-30)) {
            console.error(`${info.variant}: ${dtype} ${m}×${k}·${k}×${n} C[${i}][${j}] = ${got}, want ${want}`);
            process.exit(1);
          }
          checked++;
        }
  }
}
console.log(`${info.variant} build: ${checked} entries of ${shapes.length * 2} products match the f64 reference`);
