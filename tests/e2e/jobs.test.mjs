// Jobs through the front door: submit over HTTP, serve with real Socket.io workers, download
// and compare with a product computed here.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  api, assertClose, downloadNpy, referenceProduct, npyDecode, npyEncode, randomMatrix, rowsOf,
  startServer, startWorker, submitRandom, waitForJob,
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

test("big-endian .npy inputs give the product of their values, A's first rows kept in memory or not", async (t) => {
  const server = await startServer(t);
  await startWorker(t, server.url, { inFlight: 3, panelCache: 1 << 20 });
  // The same file as numpy's '>f4'/'>f8': the header's byte order and every element swapped.
  const bigEndian = (dtype, rows, cols, values) => {
    const npy = npyEncode(dtype, rows, cols, values);
    const start = npy.length - rows * cols * (dtype === "f32" ? 4 : 8);
    const header = npy.subarray(0, start).toString("latin1").replace("'<f", "'>f");
    const data = Buffer.from(npy.subarray(start));
    if (dtype === "f32") data.swap32();
    else data.swap64();
    return Buffer.concat([Buffer.from(header, "latin1"), data]);
  };
  // Tiles of 16 rows: the upload keeps A's first rows, whose row panels are served from
  // memory, and the rest are read from the file; both must be A's values, not its bytes.
  for (const dtype of ["f32", "f64"]) {
    const [m, k, n] = [70, 30, 50];
    const a = randomMatrix(m, k, dtype, 7);
    const b = randomMatrix(k, n, dtype, 8);
    const form = new FormData();
    form.append("a", new Blob([bigEndian(dtype, m, k, a)]), "a.npy");
    form.append("b", new Blob([bigEndian(dtype, k, n, b)]), "b.npy");
    form.append("tile", "16");
    const created = await api(server.url, "/api/jobs", { method: "POST", body: form });
    assert.equal(created.status, 201, created.text);
    await waitForJob(server.url, created.json.id);
    const npy = await downloadNpy(server.url, created.json.id);
    assert.equal(npy.dtype, dtype);
    assertClose(npy.data, referenceProduct(a, b, m, k, n), k, dtype);
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
    [form({ a: npy(1, 1), b: npy(1, 1), k_split: "x" }), 400, /k_split must be a positive integer/],
  ];
  // A small field given twice (its second value would replace a checked first one).
  for (const field of ["tile", "k_split", "name", "dtype"]) {
    const f = form({ a: npy(2, 2), b: npy(2, 2) });
    f.append(field, "1");
    f.append(field, "1");
    cases.push([f, 400, new RegExp(`field ${field} is given twice`)]);
  }
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

test("the .npy result is streamed with Range, If-Range and validators; JSON streams the same values", async (t) => {
  const server = await startServer(t);
  const [m, k, n] = [40, 7, 50];
  const { id } = await submitRandom(server.url, m, k, n, 16, 21);
  await startWorker(t, server.url);
  await waitForJob(server.url, id);
  const url = `/api/jobs/${id}/result`;
  const get = async (headers = {}, path = url) => {
    const res = await api(server.url, path, { raw: true, headers });
    return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
  };
  const size = 128 + m * n * 4;

  const whole = await get();
  assert.equal(whole.status, 200);
  assert.equal(whole.body.length, size);
  assert.equal(whole.headers.get("content-length"), String(size));
  assert.equal(whole.headers.get("accept-ranges"), "bytes");
  assert.equal(whole.headers.get("content-type"), "application/octet-stream");
  assert.equal(whole.headers.get("content-disposition"), `attachment; filename="${id}.npy"`);
  const etag = whole.headers.get("etag");
  const lastModified = whole.headers.get("last-modified");
  assert.match(etag, /^"[0-9a-f-]+"$/, "a strong entity tag");
  assert.match(lastModified, /^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/);
  const npy = npyDecode(whole.body);
  assert.deepEqual([npy.dtype, npy.rows, npy.cols], ["f32", m, n]);

  // One range, in each of its three forms: exactly those bytes, with the same validator.
  for (const [range, from, to] of [["bytes=100-1099", 100, 1100], [`bytes=${size - 300}-`, size - 300, size], ["bytes=-10", size - 10, size], ["bytes=0-0", 0, 1]]) {
    const part = await get({ range });
    assert.equal(part.status, 206, range);
    assert.equal(part.headers.get("content-range"), `bytes ${from}-${to - 1}/${size}`, range);
    assert.equal(part.headers.get("content-length"), String(to - from), range);
    assert.equal(part.headers.get("etag"), etag, range);
    assert.deepEqual(part.body, whole.body.subarray(from, to), range);
  }
  // Past the end: 416 with the size, and a message.
  const past = await api(server.url, url, { headers: { range: `bytes=${size}-` } });
  assert.equal(past.status, 416);
  assert.match(past.json.error, new RegExp(`past the end of the result \\(${size} bytes\\)`));
  const pastRaw = await api(server.url, url, { raw: true, headers: { range: `bytes=${size + 5}-${size + 9}` } });
  assert.equal(pastRaw.status, 416);
  assert.equal(pastRaw.headers.get("content-range"), `bytes */${size}`);
  // Several ranges or another unit: ignored, the whole file.
  for (const range of ["bytes=0-1,5-6", "rows=0-1", "bytes=9-3"]) {
    const res = await get({ range });
    assert.equal(res.status, 200, range);
    assert.deepEqual(res.body, whole.body, range);
  }

  // If-Range: the range only from the same file, otherwise the whole file (never a splice).
  for (const ifRange of [etag, lastModified]) {
    const res = await get({ range: "bytes=1000-", "if-range": ifRange });
    assert.equal(res.status, 206, `If-Range ${ifRange}`);
    assert.deepEqual(res.body, whole.body.subarray(1000));
  }
  for (const stale of ['"0-0-0"', `W/${etag}`, "Mon, 01 Jan 2001 00:00:00 GMT"]) {
    const res = await get({ range: "bytes=1000-", "if-range": stale });
    assert.equal(res.status, 200, `If-Range ${stale}`);
    assert.equal(res.headers.get("content-range"), null);
    assert.deepEqual(res.body, whole.body, `If-Range ${stale}`);
  }

  // JSON: the same values, written as they are read (no Content-Length); Range is ignored.
  const json = await get({ range: "bytes=0-9" }, `${url}?format=json`);
  assert.equal(json.status, 200);
  assert.equal(json.headers.get("content-type"), "application/json");
  assert.equal(json.headers.get("content-length"), null, "streamed, so no length up front");
  const c = JSON.parse(json.body.toString()).c;
  assert.equal(c.length, m);
  assert.ok(c.every((row) => row.length === n));
  assert.deepEqual(c.flat(), Array.from(npy.data), "exactly the .npy's values");
});

test("k split: each tile is the sum of its slices' partials, added in slice order, asked for or past k = 4096", async (t) => {
  const server = await startServer(t);
  // One worker with a panel cache (slices' panels are keyed apart) and one without.
  await startWorker(t, server.url, { name: "cached", panelCache: 1 << 20 });
  await startWorker(t, server.url, { name: "plain" });
  const [m, k, n, split] = [37, 29, 23, 3];
  // Values that f32 holds exactly, so that the server's inputs are these bits whatever way
  // it rounds a decimal to f32.
  const a = Float64Array.from(Float32Array.from(randomMatrix(m, k, "f64", 11)));
  const b = Float64Array.from(Float32Array.from(randomMatrix(k, n, "f64", 12)));
  const created = await api(server.url, "/api/jobs", {
    method: "POST",
    body: { a: rowsOf(a, m, k), b: rowsOf(b, k, n), tile: 8, k_split: split },
  });
  assert.equal(created.status, 201, created.text);
  assert.equal(created.json.k_split, split);
  assert.equal(created.json.tasks_total, 5 * 3 * split);
  const job = await waitForJob(server.url, created.json.id);
  assert.equal(job.k_split, split);
  const tiles = (await api(server.url, `/api/jobs/${job.id}/tiles`)).json;
  assert.deepEqual([tiles.tile_rows, tiles.tile_cols, tiles.k_split, tiles.tiles.length], [5, 9, split, 45]);
  assert.ok(tiles.tiles.every((x) => x.state === "done"));
  // What the server must return, bit for bit: each slice's partial as a worker computes it
  // (from the f32 inputs, rounded to f32), summed in f32 in slice order: slices of k are
  // k·s/3 .. k·(s+1)/3, that is 9, 10 and 10 long.
  const want = new Float32Array(m * n);
  for (let s = 0; s < split; s++) {
    const [k0, k1] = [Math.floor((s * k) / split), Math.floor(((s + 1) * k) / split)];
    const as = new Float64Array(m * (k1 - k0));
    for (let i = 0; i < m; i++) for (let p = k0; p < k1; p++) as[i * (k1 - k0) + p - k0] = a[i * k + p];
    const partial = Float32Array.from(referenceProduct(as, b.subarray(k0 * n, k1 * n), m, k1 - k0, n));
    for (let i = 0; i < m * n; i++) want[i] = s === 0 ? partial[i] : Math.fround(want[i] + partial[i]);
  }
  const npy = await downloadNpy(server.url, job.id);
  assert.deepEqual([npy.dtype, npy.rows, npy.cols], ["f32", m, n]);
  assert.deepEqual(Buffer.from(npy.data.buffer, npy.data.byteOffset, npy.data.byteLength), Buffer.from(want.buffer));
  const json = await api(server.url, `/api/jobs/${job.id}/result?format=json`);
  assert.deepEqual(Float32Array.from(json.json.c.flat()), want);

  // Past k = 4096 the server splits by itself: here in two slices of 2,048 and 2,049, as f64
  // through the .npy upload.
  const [m2, k2, n2] = [3, 4097, 5];
  const a2 = randomMatrix(m2, k2, "f64", 13), b2 = randomMatrix(k2, n2, "f64", 14);
  const form = new FormData();
  form.append("a", new Blob([npyEncode("f64", m2, k2, a2)]), "a.npy");
  form.append("b", new Blob([npyEncode("f64", k2, n2, b2)]), "b.npy");
  const auto = await api(server.url, "/api/jobs", { method: "POST", body: form });
  assert.equal(auto.status, 201, auto.text);
  assert.equal(auto.json.k_split, 2);
  await waitForJob(server.url, auto.json.id);
  assertClose((await downloadNpy(server.url, auto.json.id)).data, referenceProduct(a2, b2, m2, k2, n2), k2, "f64");

  // Out of range: 400, with the range, and nothing stored.
  const before = (await api(server.url, "/api/jobs")).json.length;
  for (const [body, form] of [[{ a: [[1, 2]], b: [[1], [2]], k_split: 3 }, false], [{ k_split: "0" }, true]]) {
    let res;
    if (form) {
      const f = new FormData();
      f.append("a", new Blob([npyEncode("f32", 1, 2, [1, 2])]), "a.npy");
      f.append("b", new Blob([npyEncode("f32", 2, 1, [1, 2])]), "b.npy");
      f.append("k_split", body.k_split);
      res = await api(server.url, "/api/jobs", { method: "POST", body: f });
    } else res = await api(server.url, "/api/jobs", { method: "POST", body });
    assert.equal(res.status, 400, res.text);
    assert.match(res.json.error, /k_split must be between 1 and 2/);
  }
  assert.equal((await api(server.url, "/api/jobs")).json.length, before);
});
