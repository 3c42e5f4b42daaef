// Jobs stored on disk as they are uploaded: a .npy upload is judged on its headers before its
// data comes, written as it arrives without being held in memory, refused with 507 when it
// would eat into the disk's reserve, and leaves nothing behind when it is cut off.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  api, assertClose, downloadNpy, npyEncode, randomMatrix, referenceProduct, startServer,
  startWorker, tempDir, waitForJob,
} from "./helpers.mjs";

const BOUNDARY = "brain-storage-test";

/** A server whose job files go to a folder the test can look into. */
async function serverWithData(t, env = {}) {
  const dataDir = join(tempDir(t), "jobs");
  const server = await startServer(t, { env: { DATA_DIR: dataDir, ...env } });
  return { server, dataDir };
}

/** The start of a file field of a multipart body (its data follows). */
const filePart = (name) =>
  Buffer.from(
    `--${BOUNDARY}\r\ncontent-disposition: form-data; name="${name}"; filename="${name}.npy"\r\n` +
      "content-type: application/octet-stream\r\n\r\n",
  );
const between = Buffer.from("\r\n");
const closing = Buffer.from(`\r\n--${BOUNDARY}--\r\n`);

/** A version 1.0 .npy header with the given dict entries, as NumPy pads it. */
function npyHeader({ descr = "<f4", fortran = "False", shape }) {
  let dict = `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }`;
  dict += " ".repeat(63 - ((10 + dict.length) % 64)) + "\n";
  const head = Buffer.alloc(10);
  Buffer.from("\x93NUMPY", "latin1").copy(head);
  head[6] = 1;
  head.writeUInt16LE(dict.length, 8);
  return Buffer.concat([head, Buffer.from(dict, "latin1")]);
}

/** The server's peak resident memory so far (kB). */
function peakKb(server) {
  const status = readFileSync(`/proc/${server.proc.pid}/status`, "utf8");
  return Number(status.match(/VmHWM:\s+(\d+) kB/)[1]);
}

/**
 * Sends the start of an upload announcing `length` bytes, never the rest, and resolves with
 * the answer: the server must answer from what it has, without the body's end.
 */
function answerWithoutTheRest(url, start, length) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error("no answer within 20 s without the rest of the body"));
    }, 20000);
    const req = http.request(`${url}/api/jobs`, {
      method: "POST",
      agent: false,
      headers: { "content-type": `multipart/form-data; boundary=${BOUNDARY}`, "content-length": length },
    }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => {
        clearTimeout(timer);
        req.destroy();
        resolve({ status: res.statusCode, text, json: JSON.parse(text) });
      });
    });
    req.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.write(start);
  });
}

/** Waits (bounded) until `check()` holds; returns whether it did. */
async function eventually(check, ms = 10000) {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return check();
}

test("a streamed .npy job of tens of MB is stored without being held in memory, and computes", async (t) => {
  const { server } = await serverWithData(t);
  const [m, k, n] = [4096, 2048, 8]; // A is 32 MiB of f32
  const a = randomMatrix(m, k, "f64", 11);
  const b = randomMatrix(k, n, "f64", 12);
  const before = peakKb(server);
  const form = new FormData();
  form.append("a", new Blob([npyEncode("f32", m, k, a)]), "a.npy");
  form.append("name", "streamed");
  form.append("b", new Blob([npyEncode("f32", k, n, b)]), "b.npy");
  const created = await api(server.url, "/api/jobs", { method: "POST", body: form });
  assert.equal(created.status, 201, created.text);
  const peak = peakKb(server);
  t.diagnostic(`32 MiB upload: server peak RSS ${before} → ${peak} kB`);
  // Holding A whole would take 32 MiB, and the old parser held it several times over.
  assert.ok(peak - before < 24 * 1024, `peak RSS grew by ${peak - before} kB`);
  await startWorker(t, server.url, { inFlight: 4 });
  const job = await waitForJob(server.url, created.json.id, { ms: 120000 });
  assert.equal(job.name, "streamed");
  const c = await downloadNpy(server.url, job.id);
  assert.deepEqual([c.dtype, c.rows, c.cols], ["f32", m, n]);
  assertClose(c.data, referenceProduct(a, b, m, k, n), k);
});

test("a bad header is refused with its message before the data is sent; nothing is stored", async (t) => {
  const { server, dataDir } = await serverWithData(t);
  const valid = npyEncode("f32", 2, 3, [1, 2, 3, 4, 5, 6]);
  const cases = [
    [npyHeader({ descr: "<i4", shape: "(1000, 1000)" }), 400, /dtype <i4 is not supported/],
    [npyHeader({ shape: "(100, 100, 100)" }), 400, /expected a 2-D array, got 3 dimension/],
    [npyHeader({ fortran: "True", shape: "(1000, 1000)" }), 400, /Fortran-order/],
    [npyHeader({ shape: "(100000, 100000)" }), 413, /more than 4294967296 elements.*MAX_JOB_ELEMENTS/],
  ];
  for (const [header, status, message] of cases) {
    const start = Buffer.concat([filePart("a"), header]);
    const res = await answerWithoutTheRest(server.url, start, start.length + 4_000_000);
    assert.equal(res.status, status, res.text);
    assert.match(res.json.error, message);
  }
  // B's header against a whole A: the inner dimensions are judged before B's data comes.
  const start = Buffer.concat([filePart("a"), valid, between, filePart("b"), npyHeader({ shape: "(4, 1000)" })]);
  const res = await answerWithoutTheRest(server.url, start, start.length + 16_000);
  assert.equal(res.status, 400, res.text);
  assert.match(res.json.error, /inner dimensions differ: a is 2×3 and b is 4×1000/);
  assert.deepEqual((await api(server.url, "/api/jobs")).json, []);
  assert.ok(await eventually(() => readdirSync(dataDir).length === 0), `left: ${readdirSync(dataDir)}`);
});

test("an upload that stops sending is cut after UPLOAD_IDLE_SECS with 408, and its preallocated files are removed", async (t) => {
  const { server, dataDir } = await serverWithData(t, { UPLOAD_IDLE_SECS: "1" });
  // A's header announces 4 MB, which the server allocates at once; 100 kB come, then nothing.
  const start = Buffer.concat([filePart("a"), npyHeader({ shape: "(1000, 1000)" }), Buffer.alloc(100_000)]);
  const sent = Date.now();
  const res = await answerWithoutTheRest(server.url, start, start.length + 4_000_000);
  assert.equal(res.status, 408, res.text);
  assert.match(res.json.error, /the upload sent nothing for 1 s \(UPLOAD_IDLE_SECS\); nothing of it was kept/);
  assert.ok(Date.now() - sent < 10_000, "cut within a few seconds of the stall");
  assert.ok(await eventually(() => readdirSync(dataDir).length === 0), `left: ${readdirSync(dataDir)}`);
  assert.deepEqual((await api(server.url, "/api/jobs")).json, []);
});

test("a job that would eat into DISK_RESERVE_BYTES gets 507 naming the bytes, before its data", async (t) => {
  const probe = tempDir(t);
  const free = Number(execFileSync("df", ["-B1", "--output=avail", probe], { encoding: "utf8" }).split("\n")[1]);
  // A reserve above what the disk holds free: no job fits, and nothing needs filling.
  const reserve = free + (1 << 30);
  const { server, dataDir } = await serverWithData(t, { DISK_RESERVE_BYTES: String(reserve) });
  const start = Buffer.concat([filePart("a"), npyHeader({ shape: "(1000, 1000)" })]);
  const res = await answerWithoutTheRest(server.url, start, start.length + 4_000_000);
  assert.equal(res.status, 507, res.text);
  assert.match(res.json.error, /not enough disk space for this job: A, B and C need at least 4008000 bytes/);
  assert.match(res.json.error, new RegExp(`keeps ${reserve} \\(.*\\) in reserve \\(DISK_RESERVE_BYTES\\)`));
  assert.match(res.json.error, /the server has \d+ bytes \(.*\) free/);
  t.diagnostic(res.json.error);
  const json = await api(server.url, "/api/jobs", { method: "POST", body: { a: [[1, 2]], b: [[3], [4]] } });
  assert.equal(json.status, 507, json.text);
  assert.match(json.json.error, /need 20 bytes/);
  assert.deepEqual((await api(server.url, "/api/jobs")).json, []);
  assert.deepEqual(readdirSync(dataDir), []);
});

test("MAX_JOB_BYTES bounds a job's A, B and C, and a split job's partials, with 413, before its data", async (t) => {
  const { server } = await serverWithData(t, { MAX_JOB_BYTES: "1048576" });
  // A alone is 1 MiB: with at least a column of B and C it is over.
  const start = Buffer.concat([filePart("a"), npyHeader({ shape: "(512, 512)" })]);
  const res = await answerWithoutTheRest(server.url, start, start.length + 1_048_576);
  assert.equal(res.status, 413, res.text);
  assert.match(res.json.error, /A, B and C would take at least 1052672 bytes .* more than MAX_JOB_BYTES = 1048576/);
  // A body announced longer than any job within the limit is refused unread.
  const long = await answerWithoutTheRest(server.url, filePart("a"), 4 << 20);
  assert.equal(long.status, 413, long.text);
  assert.match(long.json.error, /MAX_JOB_BYTES/);
  // Within the limit the same server takes the job.
  const form = new FormData();
  form.append("a", new Blob([npyEncode("f32", 256, 256, randomMatrix(256, 256, "f64", 1))]), "a.npy");
  form.append("b", new Blob([npyEncode("f32", 256, 2, randomMatrix(256, 2, "f64", 2))]), "b.npy");
  const ok = await api(server.url, "/api/jobs", { method: "POST", body: form });
  assert.equal(ok.status, 201, ok.text);
  // A split job's partial products count too: 768 KiB of matrices fit, and with k in two
  // slices the 512 KiB of partials do not.
  const square = (k_split) => {
    const f = new FormData();
    f.append("a", new Blob([npyEncode("f32", 256, 256, randomMatrix(256, 256, "f64", 3))]), "a.npy");
    f.append("b", new Blob([npyEncode("f32", 256, 256, randomMatrix(256, 256, "f64", 4))]), "b.npy");
    if (k_split) f.append("k_split", String(k_split));
    return api(server.url, "/api/jobs", { method: "POST", body: f });
  };
  const split = await square(2);
  assert.equal(split.status, 413, split.text);
  assert.match(split.json.error, /A, B and C with the partial products of k's slices \(512.0 KiB\) would take 1310720 bytes .* more than MAX_JOB_BYTES = 1048576/);
  assert.equal((await square()).status, 201);
});

test("an upload cut off mid-body leaves no job folder and no partial files; the server keeps serving", async (t) => {
  const { server, dataDir } = await serverWithData(t);
  const { hostname, port } = new URL(server.url);
  const [rows, cols] = [1024, 1024]; // 4 MiB of A, of which half is sent
  const a = npyEncode("f32", rows, cols, new Float64Array(rows * cols).fill(1));
  const b = npyEncode("f32", cols, 4, new Float64Array(cols * 4).fill(1));
  const body = Buffer.concat([filePart("a"), a, between, filePart("b"), b, closing]);
  const socket = (await import("node:net")).connect(Number(port), hostname);
  await new Promise((res, rej) => socket.once("connect", res).once("error", rej));
  socket.on("error", () => {});
  socket.write(
    `POST /api/jobs HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=${BOUNDARY}\r\n` +
      `content-length: ${body.length}\r\n\r\n`,
  );
  socket.write(body.subarray(0, filePart("a").length + a.length / 2));
  const partial = () => readdirSync(dataDir).some((f) => f.startsWith(".partial-"));
  assert.ok(await eventually(partial), `the upload was being written: ${readdirSync(dataDir)}`);
  socket.destroy();
  assert.ok(
    await eventually(() => readdirSync(dataDir).length === 0),
    `DATA_DIR still holds ${readdirSync(dataDir)}`,
  );
  assert.deepEqual((await api(server.url, "/api/jobs")).json, []);
  assert.equal((await api(server.url, "/health")).status, 200);
  const again = await api(server.url, "/api/jobs", { method: "POST", body: { a: [[1, 2]], b: [[3], [4]] } });
  assert.equal(again.status, 201, again.text);
  assert.deepEqual(readdirSync(dataDir), [again.json.id]);
});
