// The CPU share a volunteer gives ("duty cycle"), made smooth: a thread computes for
// duty × WINDOW_MS, then rests for the rest of the window, instead of computing whole tiles
// at full speed and then sleeping for seconds. A tile is cut into row bands (A is row-major,
// so a band of C needs a contiguous band of A and all of B) sized to fit one window.
//
// The compute threads run the Rust port of this policy (worker-wasm/src/duty.rs, tested with
// the same cases); the page itself uses parseDuty and DUTY_CHOICES for its setting.

/** Length of one compute-then-rest window. Short enough that a fan or a UI never feels bursts. */
export const WINDOW_MS = 150;

export const DUTY_CHOICES = [0.25, 0.5, 0.75, 1];

/** Clamps a stored or typed duty to (0, 1]; anything unreadable means full speed. */
export function parseDuty(value) {
  const d = Number(value);
  if (!Number.isFinite(d) || d <= 0) return 1;
  return Math.min(1, Math.max(0.05, d));
}

/** How long to rest after `busyMs` of computing so the thread's share is `duty`. */
export function restAfter(busyMs, duty) {
  const d = parseDuty(duty);
  if (d >= 1 || !(busyMs > 0)) return 0;
  return (busyMs * (1 - d)) / d;
}

/**
 * Rows of C to compute in one go: at full duty the whole tile (fastest, one call), else as
 * many rows as fit in duty × window at the measured speed (GFLOP/s), at least one.
 */
export function bandRows(m, k, n, gflops, duty, windowMs = WINDOW_MS) {
  const d = parseDuty(duty);
  if (d >= 1 || !(gflops > 0)) return d >= 1 ? m : Math.max(1, Math.min(m, 8));
  const flopsPerRow = 2 * k * n;
  const budget = windowMs * d * gflops * 1e6; // flops in the busy part of a window
  return Math.max(1, Math.min(m, Math.floor(budget / flopsPerRow)));
}
