import { test } from "node:test";
import assert from "node:assert/strict";
import { formatGridSpeed, gridFromStatus } from "../../src/common/grid.js";

test("/api/status gives the grid's figures in grid_stats' shape", () => {
  const status = { workers_online: 3, tasks_per_sec: 12.5, gflops: 40.25, jobs: { running: 2, queued: 1, done: 7 }, tasks: {} };
  assert.deepEqual(gridFromStatus(status), { workers_online: 3, tasks_per_sec: 12.5, gflops: 40.25, jobs_running: 2 });
  // An idle grid is figures of zero, not missing ones.
  assert.deepEqual(gridFromStatus({ workers_online: 0, jobs: {} }), { workers_online: 0, tasks_per_sec: 0, gflops: 0, jobs_running: 0 });
  for (const bad of [null, "ok", {}, { workers_online: "3" }, { workers_online: NaN }]) assert.equal(gridFromStatus(bad), null);
});

test("the grid's speed shows an idle grid as 0, not as a dash", () => {
  assert.equal(formatGridSpeed({ gflops: 0, tasks_per_sec: 0 }), "0 GFLOP/s · 0.0 tiles/s");
  assert.equal(formatGridSpeed({ gflops: 40.25, tasks_per_sec: 12.5 }), "40.3 GFLOP/s · 12.5 tiles/s");
});
