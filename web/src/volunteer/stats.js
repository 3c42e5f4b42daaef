// Speed measured by this browser: an exponentially weighted GFLOP/s per thread, and the
// total over threads. Pure, so it is unit-tested in Node.

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
  }

  recordCompute(thread, flops, ms) {
    if (!this.perThread.has(thread)) this.perThread.set(thread, new SpeedMeter());
    this.perThread.get(thread).add(flops, ms);
  }

  recordAck(accepted, flops) {
    if (accepted) {
      this.accepted += 1;
      this.flops += flops;
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

  forgetThread(thread) {
    this.perThread.delete(thread);
  }
}
