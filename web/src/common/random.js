// A small seeded generator for random matrices (the dashboard's "generate" option, and the
// tests through tests/support/matrix.mjs): the same seed gives the same matrix everywhere,
// which makes a run reproducible.

/** mulberry32: 32-bit state, good enough for test data, not for anything secret. */
export function mulberry32(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A rows×cols matrix of uniform values in [-1, 1), as Float32Array or Float64Array. */
export function randomMatrix(rows, cols, dtype, seed) {
  const next = mulberry32(seed);
  const data = dtype === "f64" ? new Float64Array(rows * cols) : new Float32Array(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = next() * 2 - 1;
  return data;
}
