// Timing for the kernel benchmarks (worker-wasm/bench/bench.mjs, web/bench/kernel-anchor.mjs).

/** Milliseconds per call: the median of five rounds of at least 100 ms each, so that one
 * disturbed round (this is a shared virtual machine) does not set the figure. */
export function time(fn, rounds = 5, minMs = 100) {
  const perCall = [];
  for (let r = 0; r < rounds; r++) {
    let reps = 0;
    const t0 = performance.now();
    let t;
    do {
      fn();
      reps++;
      t = performance.now() - t0;
    } while (t < minMs);
    perCall.push(t / reps);
  }
  return perCall.sort((x, y) => x - y)[Math.floor(rounds / 2)];
}
