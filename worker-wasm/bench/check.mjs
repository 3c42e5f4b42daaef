// Checks one wasm build against a plain f64 loop over awkward shapes (edges of every register
// tile, k across the k-block, 1×k·k×1, tall-thin, short-wide), through each JavaScript entry
// point. The wasm-bindgen tests cover the simd128 build; this covers pkg-relaxed and
// pkg-scalar too, as the page loads them. Exits non-zero on the first wrong entry.
//   node [--experimental-wasm-relaxed-simd] check.mjs <pkg dir>
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { randomMatrix, referenceProduct } from "../../tests/support/matrix.mjs";

const dir = resolve(process.argv[2]);
const mod = await import(pathToFileURL(join(dir, "worker_wasm.js")));
mod.initSync({ module: readFileSync(join(dir, "worker_wasm_bg.wasm")) });
const info = mod.kernelInfo();

let seed = 7;
const shapes = [[1, 1, 1], [1, 300, 1], [3, 1, 13], [5, 7, 9], [13, 257, 25], [37, 513, 11], [130, 64, 7], [2, 40, 300], [121, 260, 49]];
let checked = 0;
for (const [dtype, fn, eps] of [["f32", mod.matmulF32, 1.2e-7], ["f64", mod.matmulF64, 2.3e-16]]) {
  for (const [m, k, n] of shapes) {
    const a = randomMatrix(m, k, dtype, seed++), b = randomMatrix(k, n, dtype, seed++);
    const viaBytes = new a.constructor(mod.runTask(dtype, new Uint8Array(a.buffer), new Uint8Array(b.buffer), m, k, n).buffer);
    // Each entry's error bound scales with Σ|aᵢₚ·bₚⱼ|: the same product of |A| and |B|.
    const want = referenceProduct(a, b, m, k, n);
    const scale = referenceProduct(a.map(Math.abs), b.map(Math.abs), m, k, n);
    for (const c of [fn(a, b, m, k, n), viaBytes])
      for (let i = 0; i < m * n; i++) {
        if (!(Math.abs(c[i] - want[i]) <= 2 * k * eps * scale[i] + 1e-30)) {
          const [row, col] = [Math.floor(i / n), i % n];
          console.error(`${info.variant}: ${dtype} ${m}×${k}·${k}×${n} C[${row}][${col}] = ${c[i]}, want ${want[i]}`);
          process.exit(1);
        }
        checked++;
      }
  }
}
console.log(`${info.variant} build: ${checked} entries of ${shapes.length * 2} products match the f64 reference`);
