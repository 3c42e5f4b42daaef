import { test } from "node:test";
import assert from "node:assert/strict";
import { JobPace, jobGflops, Series } from "../../src/dashboard/progress.js";
import { normaliseServerUrl } from "../../src/common/settings.js";
import { formatDuration, formatGflops } from "../../src/common/format.js";

test("pace: tiles per second over the window and time left", () => {
  const p = new JobPace(30_000);
  assert.equal(p.rate(), 0);
  p.add(0, 0);
  p.add(10_000, 20);
  assert.equal(p.rate(), 2);
  assert.equal(p.eta(10), 5000);
  assert.equal(p.eta(0), 0);
  p.add(40_000, 20); // stalled for 30 s
  assert.ok(p.rate() < 2);
  p.add(50_000, 5); // counter went back (another job id reuse, a reset): start over
  assert.equal(p.rate(), 0);
  assert.equal(p.eta(5), Infinity);
});

test("pace forgets samples older than the window", () => {
  const p = new JobPace(10_000);
  p.add(0, 0);
  p.add(1000, 100); // a burst long ago
  for (let t = 2000; t <= 60_000; t += 1000) p.add(t, 100 + (t - 1000) / 1000);
  assert.ok(Math.abs(p.rate() - 1) < 0.05, `rate ${p.rate()}`);
});

test("job GFLOP/s from tiles per second", () => {
  const job = { m: 1000, k: 1000, n: 1000, tasks_total: 16 };
  assert.equal(jobGflops(job, 16), 2);
});

test("chart series keeps a bounded history and scales into the box", () => {
  const s = new Series(3);
  for (let i = 0; i < 5; i++) s.push(i * 1000, i);
  assert.equal(s.points.length, 3);
  const { points, max } = s.polyline(100, 50, 4000, 4000);
  assert.equal(max, 4);
  assert.equal(points, "50.0,25.0 75.0,12.5 100.0,0.0");
});

test("server addresses are normalised to an origin", () => {
  assert.equal(normaliseServerUrl("example.org:3000/"), "http://example.org:3000");
  assert.equal(normaliseServerUrl("https://brain.example.org/x/y"), "https://brain.example.org");
  assert.equal(normaliseServerUrl("brain.example.org", "https:"), "https://brain.example.org");
  assert.equal(normaliseServerUrl("ftp://x"), null);
  assert.equal(normaliseServerUrl(""), null);
  assert.equal(normaliseServerUrl("http://"), null);
});

test("formatting", () => {
  assert.equal(formatDuration(65_000), "1 min 05 s");
  assert.equal(formatDuration(Infinity), "–");
  assert.equal(formatGflops(3.14159), "3.14 GFLOP/s");
  assert.equal(formatGflops(0), "–");
  assert.equal(formatGflops(0.0034), "0.0034 GFLOP/s", "a trickle is not shown as 0.00");
});
