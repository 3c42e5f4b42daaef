// The CPU share a volunteer gives ("duty cycle"): the setting's choices and how a stored or
// typed value is read. The compute threads apply it in Rust (worker-wasm/src/duty.rs: a
// thread computes row bands sized to duty × a 150 ms window, then rests for the rest of it,
// instead of computing whole tiles at full speed and then sleeping for seconds).

export const DUTY_CHOICES = [0.25, 0.5, 0.75, 1];

/** Clamps a stored or typed duty to (0, 1]; anything unreadable means full speed. */
export function parseDuty(value) {
  const d = Number(value);
  if (!Number.isFinite(d) || d <= 0) return 1;
  return Math.min(1, Math.max(0.05, d));
}
