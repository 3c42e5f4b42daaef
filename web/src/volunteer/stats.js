// Speed measured by this browser: an exponentially weighted GFLOP/s per thread (the kernel's
// own speed), the total over threads, and the effective speed: the verified work this page
// actually delivered per second of late, waits for work and transfers included. Pure, so it
// is unit-tested in Node.

/** The window the effective speed is measured over, in ms. */
export const EFFECTIVE_WINDOW_MS = 10_000;

export class SpeedMeter {
  /** `alpha`: weight of the newest sample. */
  constructor(alpha = 0.3) {
    this.alpha = alpha;
    this.gflops = 0;
    this.samples = 0;
  }

  /** Adds one timed computation of `flops` that took `ms` of pure compute time. */
  add(flops, ms) {
    if (!(ms > 0) || !(flops > 0)) return this.gflops;
    const g = flops / ms / 1e6;
    this.gflops = this.samples === 0 ? g : (1 - this.alpha) * this.gflops + this.alpha * g;
    this.samples += 1;
    return this.gflops;
  }
}

/** Totals shown on the page. */
export class VolunteerStats {
  constructor() {
    this.accepted = 0;
    this.refused = 0;
    this.failed = 0;
    this.flops = 0;
    this.perThread = new Map(); // thread index -> SpeedMeter
    /** [time, flops] of the results accepted within the window, oldest first. */
    this.recent = [];
    /** Since when the page has been contributing (running), or null. */
    this.since = null;
  }

  /** The page started (or stopped: `null`) contributing; the effective speed counts from here. */
  contributing(now) {
    this.since = now;
    if (now === null) this.recent = [];
  }

  recordCompute(thread, flops, ms) {
    if (!this.perThread.has(thread)) this.perThread.set(thread, new SpeedMeter());
    this.perThread.get(thread).add(flops, ms);
  }

  recordAck(accepted, flops, now = performance.now()) {
    if (accepted) {
      this.accepted += 1;
      this.flops += flops;
      this.recent.push([now, flops]);
      this.prune(now);
    } else {
      this.refused += 1;
    }
  }

  /** Mean GFLOP/s per thread among threads that have measured anything. */
  perThreadGflops() {
    const g = [...this.perThread.values()].filter((m) => m.samples > 0).map((m) => m.gflops);
    return g.length ? g.reduce((a, b) => a + b, 0) / g.length : 0;
  }

  /** What `threads` threads give at full duty. */
  totalGflops(threads) {
    return this.perThreadGflops() * threads;
  }

  /**
   * GFLOP/s of accepted results over the last EFFECTIVE_WINDOW_MS, or over the time since the
   * page started contributing when that is shorter: what the volunteer gives, as the server
   * counts it, not what the kernel could.
   */
  effectiveGflops(now = performance.now()) {
    this.prune(now);
    if (this.since === null) return 0;
    const span = Math.min(EFFECTIVE_WINDOW_MS, now - this.since);
    if (!(span > 0)) return 0;
    const flops = this.recent.reduce((sum, [, f]) => sum + f, 0);
    return flops / span / 1e6;
  }

  prune(now) {
    let old = 0;
    while (old < this.recent.length && this.recent[old][0] < now - EFFECTIVE_WINDOW_MS) old += 1;
    if (old) this.recent.splice(0, old);
  }

  forgetThread(thread) {
    this.perThread.delete(thread);
  }
}
