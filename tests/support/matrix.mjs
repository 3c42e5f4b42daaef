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
