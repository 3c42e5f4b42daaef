// Panel reuse: workers that announce a cache are sent only the panels they lack; workers
// that do not keep getting full tasks.

import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import {
  registered, api, assertClose, downloadNpy, referenceProduct, randomMatrix, rowsOf, startServer, startWorker, waitForJob, submitRandom,
} from "./helpers.mjs";

const metric = async (url, name) => {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(text.match(new RegExp(`^${name} (\\S+)$`, "m"))[1]);
};

test("caching workers receive each panel about once; the product is exact", async (t) => {
  const server = await startServer(t);
  const [m, k, n, tile] = [64, 32, 64, 8];
  const job = await submitRandom(server.url, m, k, n, tile, 3);
  const panel = tile * k * 4; // bytes of one A row panel or B column panel
  const naive = job.tasks * 2 * panel;
  const workers = await Promise.all([1, 2].map((i) =>
    startWorker(t, server.url, { name: `cache-${i}`, panelCache: 64 * panel, inFlight: 2 })));
  await waitForJob(server.url, job.id);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
  const received = workers.reduce((s, w) => s + w.stats.bytesIn, 0);
  assert.equal(await metric(server.url, "brain_bytes_sent_total"), received, "server and workers agree");
  // Each worker needs at most the 8 A and 8 B panels once: 32 panels against 128 naive.
  assert.ok(received <= 32 * panel, `${received} bytes vs naive ${naive}`);
  assert.equal(workers.reduce((s, w) => s + w.stats.missing, 0), 0);
  t.diagnostic(`panel cache: ${received} bytes sent vs ${naive} naive (${(100 * (1 - received / naive)).toFixed(0)} % saved)`);
});

test("caching workers there when a job comes each take a block of tiles of their own", async (t) => {
  const server = await startServer(t);
  const [m, k, n, tile] = [64, 16, 64, 8]; // 8 × 8 tiles
  const panel = tile * k * 4;
  // Caches of 8 panels: the server cuts the job into four 4 × 4 blocks, 8 panels each.
  const workers = await Promise.all([1, 2, 3, 4].map((i) =>
    startWorker(t, server.url, { name: `block-${i}`, panelCache: 8 * panel, inFlight: 2, behaviour: { delayMs: 5 } })));
  const job = await submitRandom(server.url, m, k, n, tile, 11);
  await waitForJob(server.url, job.id);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
  const blockOf = ([row, col]) => `${Math.floor(row / 4)},${Math.floor(col / 4)}`;
  const blocks = workers.map((w) => {
    // Its first tiles, before any worker could run out of its own block and help another's.
    const first = new Set(w.stats.tiles.slice(0, 8).map(blockOf));
    assert.equal(first.size, 1, `${w.name}: first tiles in one block: ${JSON.stringify(w.stats.tiles.slice(0, 8))}`);
    return [...first][0];
  });
  assert.equal(new Set(blocks).size, 4, `one block each: ${blocks}`);
  const panels = workers.reduce((s, w) => s + w.stats.bytesIn, 0) / panel;
  t.diagnostic(`blocks ${blocks.join(" ")}; ${panels} panels sent (32 at the blocks' optimum)`);
});

test("a slow worker's block is helped from its far end; the product is exact", async (t) => {
  const server = await startServer(t);
  const [m, k, n, tile] = [64, 16, 64, 8]; // 64 tiles, two blocks of 32
  const panel = tile * k * 4;
  const slow = await startWorker(t, server.url, { name: "slow", panelCache: 64 * panel, inFlight: 2, behaviour: { delayMs: 250 } });
  const fast = await startWorker(t, server.url, { name: "fast", panelCache: 64 * panel, inFlight: 2 });
  const job = await submitRandom(server.url, m, k, n, tile, 13);
  await waitForJob(server.url, job.id);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
  // The slow worker's block is taken from it but for the tiles it would reach about as soon:
  // twice the 2 it holds, and those it held as the fast one ran out.
  assert.ok(slow.stats.accepted <= 12, `slow computed ${slow.stats.accepted} of 64`);
  assert.equal(slow.stats.accepted + fast.stats.accepted, 64);
});

test("a worker whose cache still holds an ended job's panels takes the next job's tiles, each panel once", async (t) => {
  const server = await startServer(t);
  const [m, k, n, tile] = [32, 16, 32, 8]; // 4 × 4 tiles, 8 panels
  const panel = tile * k * 4;
  const w = await startWorker(t, server.url, { name: "two-jobs", panelCache: 64 * panel, inFlight: 2 });
  const first = await submitRandom(server.url, m, k, n, tile, 15);
  await waitForJob(server.url, first.id);
  const before = w.stats.bytesIn;
  const second = await submitRandom(server.url, m, k, n, tile, 16);
  await waitForJob(server.url, second.id);
  assertClose((await downloadNpy(server.url, second.id)).data, second.want, second.k);
  assert.equal(w.stats.bytesIn - before, 8 * panel, "the second job's 8 panels, once each");
});

test("a small cache evicts, the worker follows, and the product is still exact", async (t) => {
  const server = await startServer(t);
  const [m, k, n, tile] = [48, 16, 48, 8];
  const job = await submitRandom(server.url, m, k, n, tile, 5);
  const panel = tile * k * 4;
  const w = await startWorker(t, server.url, { name: "small", panelCache: 3 * panel, inFlight: 1 });
  await waitForJob(server.url, job.id);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
  assert.ok(w.stats.evicted > 0, "evictions happened");
  assert.ok(w.cache.size <= 3, `cache within budget: ${w.cache.size}`);
  assert.ok(w.stats.bytesIn < job.tasks * 2 * panel);
});

test("a worker that loses panels says panel_missing and gets the task again in full", async (t) => {
  const server = await startServer(t);
  const job = await submitRandom(server.url, 32, 8, 32, 8, 7);
  const w = await startWorker(t, server.url, { name: "forgetful", panelCache: 1 << 20, inFlight: 1, behaviour: { forgetCache: true } });
  await waitForJob(server.url, job.id);
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
  assert.ok(w.stats.missing > 0, "the missing-panel path was taken");
});

test("workers that announce no cache get both panels with every task", async (t) => {
  const server = await startServer(t);
  const job = await submitRandom(server.url, 24, 8, 24, 8, 9);
  const w = await startWorker(t, server.url, { name: "plain" });
  await waitForJob(server.url, job.id);
  assert.equal(w.stats.fullTasks, job.tasks);
  assert.equal(w.stats.bytesIn, job.tasks * 2 * 8 * 8 * 4);
});

test("a worker that comes back says which panels it holds: the server counts the real ones and sends only the rest", async (t) => {
  const server = await startServer(t);
  // 4×4 tiles of 8 with k = 8 (f32, the default dtype): every panel is 256 bytes.
  const job = await submitRandom(server.url, 32, 8, 32, 8, 9);
  const other = await submitRandom(server.url, 16, 8, 16, 8, 11);
  await api(server.url, `/api/jobs/${other.id}`, { method: "DELETE" });
  const key = (id, op, i) => `${id}:${op}:${i}`;
  const holds = [
    key(job.id, "a", 0), key(other.id, "a", 0), "garbage", `${job.id}:c:0`, `${job.id}:a:-1`,
    key(job.id, "a", 99), key(job.id, "b", 1), key(job.id, "b", 1), "x".repeat(10_000),
  ];
  const { socket, ack } = await registered(t, server.url, { name: "back", panel_cache: { budget_bytes: 1 << 20, holds } });
  // Only the running job's panels inside its plan count; a cancelled job's, made-up and
  // malformed keys do not.
  assert.deepEqual(ack.panels_kept, [key(job.id, "a", 0), key(job.id, "b", 1)]);
  const task = once(socket, "task_assigned");
  socket.emit("request_task");
  const [sent] = await task;
  // The scheduler prefers a tile whose panels the worker holds: that one comes without them.
  assert.equal(sent.a_key, key(job.id, "a", 0));
  assert.equal(sent.b_key, key(job.id, "b", 1));
  assert.equal(sent.a, undefined);
  assert.equal(sent.b, undefined);

  // Within the budget, the most recent win; a flood is read no further than the bound.
  const small = await registered(t, server.url, { name: "small", panel_cache: { budget_bytes: 600, holds: [0, 1, 2, 3].map((i) => key(job.id, "a", i)) } });
  assert.deepEqual(small.ack.panels_kept, [key(job.id, "a", 2), key(job.id, "a", 3)]);
  const flood = Array.from({ length: 5000 }, (_, i) => `${i}:a:0`).concat([key(job.id, "a", 0)]);
  const flooded = await registered(t, server.url, { name: "flood", panel_cache: { budget_bytes: 1 << 20, holds: flood } });
  assert.deepEqual(flooded.ack.panels_kept, []);
  // A worker that announces no cache hears nothing of panels.
  const plain = await registered(t, server.url, { name: "plain" });
  assert.equal(plain.ack.panels_kept, undefined);
});
