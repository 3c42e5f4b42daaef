// The grid's figures as both pages show them: live from `grid_stats` over Socket.io, and from
// `GET /api/status` at first paint, before any broadcast (and, on the volunteer page, before
// start is pressed, when there is no connection at all). One shape for both sources, so the
// two pages and the API agree.

import { formatGflops } from "./format.js";

/** The grid's speed as a card shows it: an idle grid delivers 0, which is a figure, not a dash. */
export function formatGridSpeed(g) {
  return `${g.gflops > 0 ? formatGflops(g.gflops) : "0 GFLOP/s"} · ${g.tasks_per_sec.toFixed(1)} tiles/s`;
}

/** `GET /api/status`'s answer as the figures `grid_stats` carries; null if it is not one. */
export function gridFromStatus(status) {
  if (!status || typeof status !== "object" || !Number.isFinite(status.workers_online)) return null;
  const number = (x) => (Number.isFinite(x) ? x : 0);
  return {
    workers_online: status.workers_online,
    tasks_per_sec: number(status.tasks_per_sec),
    gflops: number(status.gflops),
    jobs_running: number(status.jobs?.running),
  };
}

/** The grid's figures from `server`'s `/api/status`; null when it cannot say. */
export async function fetchGrid(server) {
  try {
    const res = await fetch(`${server}/api/status`);
    return res.ok ? gridFromStatus(await res.json()) : null;
  } catch {
    return null; // unreachable for now: the figures stay as they are
  }
}
