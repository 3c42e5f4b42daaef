// The attacks of docs/security.md ("Attacks and their defences"), each mounted against the
// real server with the official socket.io-client; every test asserts that the defence holds.
// Sections are numbered as in docs/security.md. Bounds on memory or time are loose enough
// that they cannot flake (e.g. the server's RSS read from /proc), never timing assertions.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as h from "./helpers.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- 1. Job killing -------------------------------------------------------------------------



// ---- 2. Task amplification ------------------------------------------------------------------

/** The server's resident memory now and at its peak (kB), from /proc/<pid>/status. */
async function memoryOf2(server) {
  const { readFile } = await import("node:fs/promises");
  const status = await readFile(`/proc/${server.proc.pid}/status`, "utf8");
  const kb = (field) => Number(status.match(new RegExp(`${field}:\\s+(\\d+) kB`))[1]);
  return { rssKb: kb("VmRSS"), peakKb: kb("VmHWM") };
}

test("2. a tile far too small for the shape is refused with the smallest tile accepted; nothing is stored", async (t) => {
  const server = await h.startServer(t);
  const column = (n) => Array.from({ length: n }, () => [1]);
  const row = (n) => [Array(n).fill(1)];
  // 3000×1 · 1×3000 at tile 1 (18 kB of compact JSON, 24 kB with spaces) would be 9·10⁶
  // tasks; 14141 would be 2·10⁸.
  for (const [size, smallest, tasks] of [[3000, 10, 9000000], [14141, 45, 199967881]]) {
    const body = JSON.stringify({ a: column(size), b: row(size), tile: 1 });
    const res = await h.api(server.url, "/api/jobs", { method: "POST", body });
    assert.equal(res.status, 400, res.text);
    assert.match(res.json.error, new RegExp(`into ${tasks} tasks, more than MAX_TASKS_PER_JOB = 100000: use tile ${smallest} or more`));
    t.diagnostic(`${size}×1·1×${size} tile 1 (${body.length}-byte body): 400 "${res.json.error}"`);
  }
  // 14142 is over MAX_JOB_ELEMENTS (C alone holds 2.0·10⁸): 413 before any tile is considered.
  const over = await h.api(server.url, "/api/jobs", { method: "POST", body: { a: column(14142), b: row(14142), tile: 1 } });
  assert.equal(over.status, 413, over.text);
  assert.equal((await h.api(server.url, "/api/jobs")).json.length, 0, "no refused job was stored");
  assert.equal((await h.api(server.url, "/api/status")).json.tasks.queued, 0);
  // Without a tile the server picks one that stays under the cap.
  const chosen = await h.api(server.url, "/api/jobs", { method: "POST", body: { a: column(3000), b: row(3000) } });
  assert.equal(chosen.status, 201, chosen.text);
  assert.ok(chosen.json.tasks_total <= 100000, `${chosen.json.tasks_total} tasks`);
  const { peakKb } = await memoryOf2(server);
  t.diagnostic(`no tile: tile ${chosen.json.tile}, ${chosen.json.tasks_total} tasks; server peak RSS ${peakKb} kB`);
  assert.ok(peakKb < 1024 * 1024, `peak RSS ${peakKb} kB`);
});

test("2. MAX_TASKS_PER_JOB holds end to end, and a job at the cap is stored and computed whole", async (t) => {
  const server = await h.startServer(t, { env: { MAX_TASKS_PER_JOB: "50" } });
  const a = Array.from({ length: 100 }, () => [1]);
  const b = [Array(100).fill(2)];
  const refused = await h.api(server.url, "/api/jobs", { method: "POST", body: { a, b, tile: 14 } });
  assert.equal(refused.status, 400, refused.text);
  assert.match(refused.json.error, /64 tasks, more than MAX_TASKS_PER_JOB = 50: use tile 15 or more/);
  const created = await h.api(server.url, "/api/jobs", { method: "POST", body: { a, b, tile: 15 } });
  assert.equal(created.status, 201, created.text);
  assert.equal(created.json.tasks_total, 49);
  assert.equal((await h.api(server.url, "/api/status")).json.tasks.queued, 49);
  await h.startWorker(t, server.url, { inFlight: 4 });
  await h.waitForJob(server.url, created.json.id);
  const c = await h.downloadNpy(server.url, created.json.id);
  assert.ok(c.data.every((x) => x === 2), "every tile of the capped job came back");
});


// ---- 3. Memory amplification in JSON --------------------------------------------------------

/** The server's resident memory now and at its peak (kB), from /proc/<pid>/status. */
async function memoryOf3(server) {
  const { readFile } = await import("node:fs/promises");
  const status = await readFile(`/proc/${server.proc.pid}/status`, "utf8");
  const kb = (field) => Number(status.match(new RegExp(`${field}:\\s+(\\d+) kB`))[1]);
  return { rssKb: kb("VmRSS"), peakKb: kb("VmHWM") };
}

test("3. a 1 MB JSON body with one long row and 200,000 empty rows gets 400; the server stays up and small", async (t) => {
  const server = await h.startServer(t);
  const before = await memoryOf3(server);
  const body = `{"a": [[${"0,".repeat(299999)}0]${",[]".repeat(200000)}], "b": [[1]]}`;
  assert.ok(body.length > 1_000_000);
  // It used to abort the process (capacity overflow); send it a few times to be sure.
  for (let i = 0; i < 3; i++) {
    const res = await h.api(server.url, "/api/jobs", { method: "POST", body });
    assert.equal(res.status, 400, res.text);
    assert.match(res.json.error, /a is ragged: row 1 has 0 columns, row 0 has 300000/);
  }
  assert.equal((await h.api(server.url, "/health")).status, 200, "the server is still up");
  assert.equal(server.proc.exitCode, null);
  const after = await memoryOf3(server);
  t.diagnostic(`${body.length}-byte body ×3: RSS ${before.rssKb} → ${after.rssKb} kB, peak ${after.peakKb} kB`);
  assert.ok(after.peakKb < 1024 * 1024, `peak RSS ${after.peakKb} kB`);
});

test("3. JSON has its own body limit, with a 413 that points to .npy; the same matrices go as .npy", async (t) => {
  const server = await h.startServer(t, { env: { MAX_JSON_BODY_BYTES: "65536" } });
  const m = 200;
  const values = h.randomMatrix(m, m, 3);
  const body = JSON.stringify({ a: h.rowsOf(values, m, m), b: h.rowsOf(values, m, m) });
  const big = await h.api(server.url, "/api/jobs", { method: "POST", body });
  assert.equal(big.status, 413, big.text);
  assert.match(big.json.error, /MAX_JSON_BODY_BYTES/);
  assert.match(big.json.error, /\.npy/);
  t.diagnostic(`${body.length}-byte JSON body: 413 "${big.json.error}"`);
  const form = new FormData();
  form.append("a", new Blob([h.npyEncode("f32", m, m, values)]), "a.npy");
  form.append("b", new Blob([h.npyEncode("f32", m, m, values)]), "b.npy");
  const npy = await h.api(server.url, "/api/jobs", { method: "POST", body: form });
  assert.equal(npy.status, 201, npy.text);
});

test("3. JSON numbers count against MAX_JOB_ELEMENTS as they are read", async (t) => {
  const server = await h.startServer(t, { env: { MAX_JOB_ELEMENTS: "20000" } });
  // 30,000 numbers of A in 60 kB: refused at the 20,001st, before B or C are looked at.
  const body = `{"a": [[${"1,".repeat(29999)}1]], "b": [[1]]}`;
  const res = await h.api(server.url, "/api/jobs", { method: "POST", body });
  assert.equal(res.status, 413, res.text);
  assert.match(res.json.error, /more than 20000 elements/);
});


// ---- 4. A hostile page enlists its visitors -------------------------------------------------



// ---- 5. Forged addresses --------------------------------------------------------------------



// ---- 6. Re-send amplification ---------------------------------------------------------------



// ---- 7. Lease hoarding ----------------------------------------------------------------------



// ---- 8. Tiles that can never be returned ----------------------------------------------------

test("8. an f64 tile whose result cannot fit one message is refused with the largest tile accepted", async (t) => {
  const server = await h.startServer(t);
  // 2897² f64 = 67,140,872 bytes, over the default MAX_MESSAGE_BYTES (64 MiB).
  const a = Array.from({ length: 2897 }, () => [1]);
  const b = [Array(2897).fill(1)];
  const res = await h.api(server.url, "/api/jobs", { method: "POST", body: { a, b, dtype: "f64", tile: 2897 } });
  assert.equal(res.status, 400, res.text);
  assert.match(res.json.error, /67140872 bytes, more than one Socket\.io message carries/);
  assert.match(res.json.error, /use tile 2804 or less/);
  t.diagnostic(`tile 2897 f64: 400 "${res.json.error}"`);
  assert.equal((await h.api(server.url, "/api/jobs")).json.length, 0);
});

test("8. with a small MAX_MESSAGE_BYTES the chosen tile still fits, and every result comes back", async (t) => {
  const server = await h.startServer(t, { env: { MAX_MESSAGE_BYTES: "65536" } });
  const m = 100;
  const values = h.randomMatrix(m, 1, 5);
  const a = h.rowsOf(values, m, 1);
  const b = [values];
  // 100² f64 = 80 kB: more than a message at this limit.
  const refused = await h.api(server.url, "/api/jobs", { method: "POST", body: { a, b, dtype: "f64", tile: 100 } });
  assert.equal(refused.status, 400, refused.text);
  assert.match(refused.json.error, /use tile 87 or less/);
  const created = await h.api(server.url, "/api/jobs", { method: "POST", body: { a, b, dtype: "f64" } });
  assert.equal(created.status, 201, created.text);
  const tile = created.json.tile;
  assert.ok(tile * tile * 8 <= 65536, `tile ${tile}`);
  t.diagnostic(`no tile at MAX_MESSAGE_BYTES=65536: tile ${tile}, ${created.json.tasks_total} tasks, results of ${tile * tile * 8} bytes`);
  const worker = await h.startWorker(t, server.url, { inFlight: 2 });
  await h.waitForJob(server.url, created.json.id);
  assert.equal(worker.stats.refused, 0);
  assert.ok(worker.socket.connected, "the worker was never cut off for an oversized result");
  const c = await h.downloadNpy(server.url, created.json.id);
  h.assertClose(c.data, h.matmul(values, values, m, 1, m), 1, "f64");
});


// ---- 9. Non-finite bounds -------------------------------------------------------------------



// ---- 10. Unbounded metric labels ------------------------------------------------------------

test("10. thousands of made-up methods and paths leave /metrics with a bounded set of series", async (t) => {
  const server = await h.startServer(t);
  const series = async () => {
    const text = (await h.api(server.url, "/metrics")).text;
    return text.split("\n").filter((l) => l.startsWith("brain_http_request_duration_seconds_count"));
  };
  const before = (await series()).length;
  const requests = [];
  for (let i = 0; i < 3000; i++) {
    const [method, path] = i % 3 === 2 ? ["GET", `/made/up/${i}`] : [`FOO${i}`, i % 3 ? "/health" : `/api/jobs/${i}`];
    requests.push(() => fetch(server.url + path, { method }).then((r) => r.arrayBuffer()));
  }
  // Fifty at a time, so that the test stays cheap on a loaded machine.
  for (let i = 0; i < requests.length; i += 50) await Promise.all(requests.slice(i, i + 50).map((f) => f()));
  const after = await series();
  t.diagnostic(`series before: ${before}, after 3000 made-up requests: ${after.length}\n${after.join("\n")}`);
  assert.ok(after.length <= before + 6, `${after.length} series`);
  assert.ok(!after.some((l) => /FOO/.test(l) || /made\/up/.test(l)), "no label holds a made-up method or path");
  const others = after.filter((l) => l.includes('method="other"'));
  const counted = others.reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
  assert.equal(counted, 2000, "every made-up method was counted, under one label");
});


// ---- 12. Stale standing ---------------------------------------------------------------------



// (11, the dashboard handing its token to any server, is a browser test: web/test/e2e/.)
