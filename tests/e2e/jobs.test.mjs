// Jobs through the front door: submit over HTTP, serve with real Socket.io workers, download
// and compare with a product computed here.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  api, assertClose, downloadNpy, referenceProduct, npyEncode, randomMatrix, rowsOf, startServer,
  startWorker, waitForJob,
} from "./helpers.mjs";

test("a JSON job with shapes not multiples of the tile is served by several workers", async (t) => {
  const server = await startServer(t);
  const [m, k, n] = [37, 19, 23];
  const a = randomMatrix(m, k, "f64", 7);
  const b = randomMatrix(k, n, "f64", 8);

  const created = await api(server.url, "/api/jobs", {
    method: "POST",
    body: { a: rowsOf(a, m, k), b: rowsOf(b, k, n), tile: 8, name: "odd shapes" },
  });
  assert.equal(created.status, 201, created.text);
  assert.deepEqual(
    { m: created.json.m, k: created.json.k, n: created.json.n, tile: created.json.tile },
    { m, k, n, tile: 8 },
  );
  assert.equal(created.json.tasks_total, 5 * 3);
  assert.equal(created.json.dtype, "f32");

  const workers = await Promise.all([1, 2, 3].map((i) => startWorker(t, server.url, { name: `w${i}` })));
  const job = await waitForJob(server.url, created.json.id);
  assert.equal(job.tasks_done, 15);
  assert.ok(job.finished_at, "a finished job has finished_at");

  const want = referenceProduct(a, b, m, k, n);
  const npy = await downloadNpy(server.url, job.id);
  assert.deepEqual([npy.dtype, npy.rows, npy.cols], ["f32", m, n]);
  assertClose(npy.data, want, k);
  const json = await api(server.url, `/api/jobs/${job.id}/result?format=json`);
  assert.equal(json.json.c.length, m);
  assertClose(json.json.c.flat(), want, k);
  const served = workers.map((w) => w.stats.accepted);
  assert.equal(served.reduce((x, y) => x + y), 15);
  assert.ok(served.filter((s) => s > 0).length >= 2, `work was shared: ${served}`);
});

test("npy uploads in f64, including 1×1, k = 1 and tall-thin shapes", async (t) => {
  const server = await startServer(t);
  await startWorker(t, server.url, { inFlight: 3 });
  for (const [m, k, n, tile] of [[1, 1, 1, undefined], [50, 1, 3, 16], [200, 3, 1, 64], [1, 40, 70, 32]]) {
    const a = randomMatrix(m, k, "f64", m + k);
    const b = randomMatrix(k, n, "f64", k + n);
    const form = new FormData();
    form.append("a", new Blob([npyEncode("f64", m, k, a)]), "a.npy");
    form.append("b", new Blob([npyEncode("f64", k, n, b)]), "b.npy");
    if (tile) form.append("tile", String(tile));
    form.append("name", `shape ${m}x${k}x${n}`);
    const created = await api(server.url, "/api/jobs", { method: "POST", body: form });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.dtype, "f64");
    const job = await waitForJob(server.url, created.json.id);
    assert.equal(job.name, `shape ${m}x${k}x${n}`);
    const npy = await downloadNpy(server.url, job.id);
    assert.equal(npy.dtype, "f64");
    assertClose(npy.data, referenceProduct(a, b, m, k, n), k, "f64");
  }
});

test("bad input gets a 4xx with a message, and nothing is stored", async (t) => {
  const server = await startServer(t, { env: { MAX_JSON_BODY_BYTES: "4096" } });
  const npy = (rows, cols) => new Blob([npyEncode("f32", rows, cols, randomMatrix(rows, cols, "f64", 1))]);
  const form = (parts) => {
    const f = new FormData();
    for (const [k, v] of Object.entries(parts)) typeof v === "string" ? f.append(k, v) : f.append(k, v, `${k}.npy`);
    return f;
  };
  const cases = [
    [{ a: [[1, 2], [3]], b: [[1], [2]] }, 400, /ragged/],
    [{ a: [[1, "x"]], b: [[1], [2]] }, 400, /a\[0\]\[1\] is not a number/],
    [{ a: [[1, 2]], b: [[1], [2], [3]] }, 400, /inner dimensions differ/],
    [{ a: [], b: [[1]] }, 400, /empty/],
    [{ a: [[1e300]], b: [[1]] }, 400, /not finite/],
    [{ a: [[1]], b: [[1]], dtype: "int8" }, 400, /dtype/],
    [{ a: [[1]], b: [[1]], tile: 0 }, 400, /tile/],
    ['{"a": [[1]], "b": ', 400, /invalid JSON/],
    [{ a: Array.from({ length: 48 }, () => Array(48).fill(1)), b: [[1]] }, 413, /limit/],
    [form({ a: new Blob([Buffer.from("not an npy file")]), b: npy(1, 1) }), 400, /not a valid \.npy/],
    [form({ a: npy(2, 3), b: npy(2, 3) }), 400, /inner dimensions differ/],
    [form({ a: npy(2, 3) }), 400, /missing file b/],
    [form({ a: npy(1, 1), b: npy(1, 1), tile: "big" }), 400, /tile/],
  ];
  for (const [body, status, message] of cases) {
    const label = body instanceof FormData ? `multipart ${[...body.keys()]}` : JSON.stringify(body).slice(0, 60);
    const res = await api(server.url, "/api/jobs", { method: "POST", body }).catch((e) => {
      throw new Error(`${label}: ${e.message} (${e.cause})`);
    });
    assert.equal(res.status, status, `${label} → ${res.text}`);
    assert.match(res.json?.error ?? "", message);
  }
  const text = await api(server.url, "/api/jobs", { method: "POST", body: "x", headers: { "content-type": "text/plain" } });
  assert.equal(text.status, 400);
  const jobs = await api(server.url, "/api/jobs");
  assert.deepEqual(jobs.json, [], "no bad submission was stored");
  const status = await api(server.url, "/api/status");
  assert.equal(status.json.tasks.queued, 0);
});

test("results are 409 until done, 404 for unknown jobs; cancel withdraws the tasks", async (t) => {
  const server = await startServer(t);
  const created = await api(server.url, "/api/jobs", {
    method: "POST",
    body: { a: [[1, 2], [3, 4]], b: [[5], [6]], tile: 1 },
  });
  assert.equal(created.status, 201);
  const id = created.json.id;
  const early = await api(server.url, `/api/jobs/${id}/result`);
  assert.equal(early.status, 409);
  assert.match(early.json.error, /queued/);
  assert.equal((await api(server.url, "/api/jobs/nope/result")).status, 404);
  assert.equal((await api(server.url, "/api/jobs/nope")).status, 404);
  assert.equal((await api(server.url, "/api/jobs/nope", { method: "DELETE" })).status, 404);

  const cancelled = await api(server.url, `/api/jobs/${id}`, { method: "DELETE" });
  assert.equal(cancelled.status, 200);
  assert.equal(cancelled.json.status, "cancelled");
  assert.equal((await api(server.url, `/api/jobs/${id}`, { method: "DELETE" })).status, 409);
  const status = (await api(server.url, "/api/status")).json;
  assert.equal(status.tasks.queued, 0);
  assert.equal(status.tasks.cancelled, 2);
  assert.equal(status.jobs.cancelled, 1);
});

test("with API_TOKEN, submitting, cancelling and downloading need the bearer token", async (t) => {
  const server = await startServer(t, { env: { API_TOKEN: "s3cret-token" } });
  const body = { a: [[1]], b: [[2]] };
  assert.equal((await api(server.url, "/api/jobs", { method: "POST", body })).status, 401);
  const wrong = { authorization: "Bearer s3cret-tokem" };
  assert.equal((await api(server.url, "/api/jobs", { method: "POST", body, headers: wrong })).status, 401);
  const auth = { authorization: "Bearer s3cret-token" };
  const created = await api(server.url, "/api/jobs", { method: "POST", body, headers: auth });
  assert.equal(created.status, 201);
  await startWorker(t, server.url);
  await waitForJob(server.url, created.json.id);
  assert.equal((await api(server.url, `/api/jobs/${created.json.id}/result`)).status, 401);
  const npy = await downloadNpy(server.url, created.json.id, auth);
  assert.deepEqual(Array.from(npy.data), [2]);
  assert.equal((await api(server.url, "/api/jobs")).status, 200, "listing stays public");
});

test("health and status answer as the ancestor's did", async (t) => {
  const server = await startServer(t);
  const health = await api(server.url, "/health");
  assert.deepEqual([health.status, health.json], [200, { status: "ok" }]);
  const status = (await api(server.url, "/api/status")).json;
  assert.equal(typeof status.version, "string");
  assert.equal(typeof status.uptime_s, "number");
  assert.equal(status.workers_online, 0);
  assert.deepEqual(Object.keys(status.tasks).sort(), ["cancelled", "done", "failed", "leased", "queued"]);
});
