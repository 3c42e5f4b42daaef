// Test matrices and the answer to check a grid's product against, shared by the end-to-end
// tests (tests/e2e), the browser tests (web/test/e2e), the kernel check
// (worker-wasm/bench/check.mjs) and the command-line volunteer (tools/volunteer). No
// dependencies, so any of them can import it.
//
// The generator is the page's own (the dashboard's "generate random matrices"), re-exported
// rather than copied: a seed names the same matrix in a test, on the page and in a bug report.
export { mulberry32, randomMatrix } from "../../web/src/common/random.js";

/**
 * C = A·B for row-major A (m×k) and B (k×n), accumulated in f64 whatever the inputs' type:
 * computed here, independently of the server and of the wasm kernel, so that either can be
 * checked against it. Each entry sums its k terms in order p = 0…k-1.
 */
export function referenceProduct(a, b, m, k, n) {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      for (let j = 0; j < n; j++) c[i * n + j] += x * b[p * n + j];
    }
  }
  return c;
}

/**
 * Freivalds' check, done here in f64: C·x against A·(B·x) for three random vectors, each entry
 * within a bound on f32 accumulation error (4·k·ε·(|A|·(|B|·|x|))). O(n²), so it scales to the
 * big jobs where a full reference product in JavaScript would take minutes.
 */
export function checkProduct(a, b, c, m, k, n, dtype = "f32") {
  const eps = dtype === "f32" ? 1.2e-7 : 2.3e-16;
  for (let round = 0; round < 3; round++) {
    const x = Float64Array.from({ length: n }, () => Math.random() * 2 - 1);
    const bx = new Float64Array(k), absBx = new Float64Array(k);
    for (let p = 0; p < k; p++)
      for (let j = 0; j < n; j++) {
        bx[p] += b[p * n + j] * x[j];
        absBx[p] += Math.abs(b[p * n + j] * x[j]);
      }
    for (let i = 0; i < m; i++) {
      let want = 0, scale = 0, got = 0;
      for (let p = 0; p < k; p++) {
        want += a[i * k + p] * bx[p];
        scale += Math.abs(a[i * k + p]) * absBx[p];
      }
      for (let j = 0; j < n; j++) got += c[i * n + j] * x[j];
      if (!(Math.abs(got - want) <= 4 * k * eps * scale + 1e-9))
        throw new Error(`product check failed at row ${i}: C·x = ${got}, A·(B·x) = ${want}`);
    }
  }
}
