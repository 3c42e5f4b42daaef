// Honest tiles for the verification corpus of `make bench-verify` (docs/benchmarks.md,
// "Server-side verification"): operands from seven input families that stress rounding (the
// six of issue #12 and constant rows, where round-to-nearest drifts), each
// product computed by every kernel a volunteer may run in Node: the three wasm builds
// (relaxed-SIMD with FMA, SIMD, scalar) through `runTask`, as workers call them, and a naive
// JavaScript loop. scripts/verify_corpus_numpy.py then adds NumPy/OpenBLAS's product, and
// `cargo bench -p server --bench verify` checks every tile.
//   node --experimental-wasm-relaxed-simd verify-corpus.mjs <out file> [groups]
// Each group of the output holds A and B once, then one C per kernel (little-endian):
//   u32 magic "TILE", u8 dtype (0 f32, 1 f64), u8 family, u16 kernels, u32 m, k, n, u32 0,
//   A, B, then per kernel: u32 kernel id (0 relaxed, 1 simd, 2 scalar, 3 naive JS, 4 NumPy), C.
import { readFileSync, openSync, writeSync, closeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const out = process.argv[2];
const groups = Number(process.argv[3] ?? 20000);
if (!out || !(groups > 0)) {
  console.error("usage: node --experimental-wasm-relaxed-simd verify-corpus.mjs <out file> [groups]");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const builds = [];
for (const variant of ["relaxed", "simd", "scalar"]) {
  const dir = resolve(here, `../pkg-${variant}`);
  const mod = await import(pathToFileURL(join(dir, "worker_wasm.js")));
  mod.initSync({ module: readFileSync(join(dir, "worker_wasm_bg.wasm")) });
  const info = mod.kernelInfo();
  if ((variant === "relaxed") !== info.relaxed_simd || (variant !== "scalar") !== info.simd) {
    throw new Error(`pkg-${variant} is ${JSON.stringify(info)}`);
  }
  builds.push(mod);
}

// xorshift128+, seeded: the corpus is the same on every run.
let s0 = 0x9e3779b97f4a7c15n, s1 = 0xbf58476d1ce4e5b9n;
const mask = (1n << 64n) - 1n;
function next64() {
  let x = s0;
  const y = s1;
  s0 = y;
  x ^= (x << 23n) & mask;
  s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
  return (s1 + y) & mask;
}
const random = () => Number(next64() >> 11n) / 2 ** 53;
const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
const sign = () => (random() < 0.5 ? -1 : 1);
const FAMILIES = ["uniform ±1", "uniform [0,1]", "Gaussian", "heavy-tailed", "2^-20…2^20", "near-cancelling", "constant 0.1"];
function sample(family) {
  switch (family) {
    case 0: return 2 * random() - 1;
    case 1: return random();
    case 2: case 5: return gaussian();
    case 3: return sign() * (1e-6 + (1 - 1e-6) * random()) ** (-1 / 1.5); // Pareto, α = 1.5
    case 4: return sign() * 2 ** (40 * random() - 20);
    case 6: return 0.1; // round-to-nearest drifts the same way at every step of a running sum
  }
}
function operands(family, T, m, k, n) {
  const a = new T(m * k), b = new T(k * n);
  for (let i = 0; i < a.length; i++) a[i] = sample(family);
  for (let i = 0; i < b.length; i++) b[i] = sample(family);
  if (family === 5) {
    // Pairs of equal rows of B, and rows of A that cancel them up to 10⁻⁴: C ≈ 0.
    for (let p = 1; p < k; p += 2) {
      b.copyWithin(p * n, (p - 1) * n, p * n);
      for (let i = 0; i < m; i++) {
        const x = a[i * k + p - 1];
        a[i * k + p] = -x + 1e-4 * x * gaussian();
      }
    }
  }
  return [a, b];
}
function naive(T, a, b, m, k, n) {
  const c = new T(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      for (let j = 0; j < n; j++) c[i * n + j] += x * b[p * n + j];
    }
  return c;
}
const logUniform = (lo, hi) => Math.round(Math.exp(Math.log(lo) + random() * (Math.log(hi) - Math.log(lo))));

// A handful of big tiles, the scheduler's own shapes, then many small awkward ones.
const shapes = [];
for (let dtype = 0; dtype < 2; dtype++) {
  for (let family = 0; family < FAMILIES.length; family++) {
    shapes.push([dtype, family, 256, 4096, 256], [dtype, family, 64, 1024, 64], [dtype, family, 1, 1, 1]);
  }
  shapes.push([dtype, 2, 256, 16384, 256], [dtype, 1, 256, 16384, 256]);
}
while (shapes.length < groups) {
  shapes.push([Math.floor(random() * 2), Math.floor(random() * FAMILIES.length), logUniform(1, 32), logUniform(1, 1024), logUniform(1, 32)]);
}

const fd = openSync(out, "w");
const started = performance.now();
let tiles = 0;
for (const [dtype, family, m, k, n] of shapes.slice(0, groups)) {
  const T = dtype === 0 ? Float32Array : Float64Array;
  const [a, b] = operands(family, T, m, k, n);
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0x454c4954, 0);
  header.writeUInt8(dtype, 4);
  header.writeUInt8(family, 5);
  header.writeUInt16LE(builds.length + 1, 6);
  header.writeUInt32LE(m, 8);
  header.writeUInt32LE(k, 12);
  header.writeUInt32LE(n, 16);
  writeSync(fd, header);
  const ab = new Uint8Array(a.buffer), bb = new Uint8Array(b.buffer);
  writeSync(fd, ab);
  writeSync(fd, bb);
  const id = Buffer.alloc(4);
  builds.forEach((mod, kernel) => {
    const c = mod.runTask(dtype === 0 ? "f32" : "f64", ab, bb, m, k, n);
    id.writeUInt32LE(kernel, 0);
    writeSync(fd, id);
    writeSync(fd, c);
  });
  id.writeUInt32LE(3, 0);
  writeSync(fd, id);
  writeSync(fd, new Uint8Array(naive(T, a, b, m, k, n).buffer));
  tiles += builds.length + 1;
}
closeSync(fd);
console.log(`verify-corpus: ${groups} operand pairs, ${tiles} tiles from ${builds.length} wasm builds + naive JS in ${((performance.now() - started) / 1000).toFixed(1)} s (families: ${FAMILIES.join(", ")})`);
