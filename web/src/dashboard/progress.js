// Job progress as the dashboard shows it: tiles per second over a recent window and the
// time left at that pace, from the `tasks_done` counts seen over time. Pure (unit-tested).

/** How far back the pace looks: long enough to smooth bursts, short enough to follow changes. */
export const PACE_WINDOW_MS = 30_000;

export class JobPace {
  constructor(windowMs = PACE_WINDOW_MS) {
    this.windowMs = windowMs;
    this.samples = []; // [timeMs, tasksDone], oldest first
  }

  add(timeMs, tasksDone) {
    const last = this.samples[this.samples.length - 1];
    if (last && tasksDone < last[1]) this.samples = []; // a restarted count
    if (last && last[1] === tasksDone && this.samples.length > 1) {
      // No progress: move the newest sample forward so the pace decays while stalled.
      last[0] = timeMs;
    } else {
      this.samples.push([timeMs, tasksDone]);
    }
    const cutoff = timeMs - this.windowMs;
    while (this.samples.length > 2 && this.samples[1][0] <= cutoff) this.samples.shift();
  }

  /** Tiles per second over the window, 0 until two samples exist. */
  rate() {
    if (this.samples.length < 2) return 0;
    const [t0, d0] = this.samples[0];
    const [t1, d1] = this.samples[this.samples.length - 1];
    return t1 > t0 ? ((d1 - d0) * 1000) / (t1 - t0) : 0;
  }

  /** Milliseconds left for `remaining` tiles at the current pace, or Infinity. */
  eta(remaining) {
    if (remaining <= 0) return 0;
    const r = this.rate();
    return r > 0 ? (remaining / r) * 1000 : Infinity;
  }
}

/** GFLOP/s a job is getting: 2·k FLOPs per element of a tile, tile count × tile area. */
export function jobGflops(job, tilesPerSec) {
  const tiles = Math.max(1, job.tasks_total);
  const flopsPerTile = (2 * job.m * job.k * job.n) / tiles;
  return (tilesPerSec * flopsPerTile) / 1e9;
}

/** A fixed-size history of numbers (the throughput chart). */
export class Series {
  constructor(capacity) {
    this.capacity = capacity;
    this.points = [];
  }

  push(t, v) {
    this.points.push([t, v]);
    if (this.points.length > this.capacity) this.points.shift();
  }

  /** SVG polyline points scaled into width×height (origin bottom-left), with the max used. */
  polyline(width, height, spanMs, now) {
    const max = Math.max(1e-9, ...this.points.map((p) => p[1]));
    const pts = this.points
      .filter(([t]) => now - t <= spanMs)
      .map(([t, v]) => {
        const x = width - ((now - t) / spanMs) * width;
        const y = height - (v / max) * height;
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
    return { points: pts.join(" "), max };
  }
}
