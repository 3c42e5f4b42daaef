// The researcher CLI (`brain`) through the front door: the real binary against the real server,
// with Socket.io workers computing the tiles and the product checked against one computed here.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, request as httpRequest } from "node:http";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  api, assertClose, referenceProduct, npyDecode, npyEncode, randomMatrix, startServer, startWorker,
  tempDir,
} from "./helpers.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const CLI_BIN = process.env.BRAIN_CLI_BIN ?? resolve(here, "../../target/debug/brain");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Runs `brain args…` in `cwd` and resolves with its exit code and output. Asynchronous on
 * purpose: the workers live in this process and must keep computing while the CLI waits.
 * BRAIN_SERVER and API_TOKEN from the outer environment are dropped so each test says what
 * it means.
 */
function brain(args, { cwd, env = {} } = {}) {
  const base = { ...process.env };
  delete base.BRAIN_SERVER;
  delete base.API_TOKEN;
  return new Promise((res, rej) => {
    execFile(CLI_BIN, args, { cwd, env: { ...base, ...env }, timeout: 60000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return rej(new Error(`brain ${args.join(" ")}: ${err.message}\n${stderr}`));
      res({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

/** Writes A (m×k) and B (k×n) as .npy files into `dir`; returns them with the product. */
function writeInputs(dir, m, k, n, { dtype = "f32", seed = 3, prefix = "" } = {}) {
  const a = randomMatrix(m, k, "f64", seed);
  const b = randomMatrix(k, n, "f64", seed + 1);
  writeFileSync(join(dir, `${prefix}a.npy`), npyEncode(dtype, m, k, a));
  writeFileSync(join(dir, `${prefix}b.npy`), npyEncode(dtype, k, n, b));
  return { want: referenceProduct(a, b, m, k, n) };
}

/** A port nobody listens on: bound by the OS, then released. */
async function closedPort() {
  const probe = createServer();
  await new Promise((res) => probe.listen(0, "127.0.0.1", res));
  const { port } = probe.address();
  await new Promise((res) => probe.close(res));
  return port;
}

test("submit --wait -o writes the product two workers computed; jobs, status and result agree", async (t) => {
  const server = await startServer(t);
  const workers = await Promise.all([1, 2].map((i) => startWorker(t, server.url, { name: `w${i}` })));
  const dir = tempDir(t);
  const [m, k, n] = [37, 29, 23];
  const { want } = writeInputs(dir, m, k, n);

  const run = await brain(
    ["submit", "a.npy", "b.npy", "--tile", "16", "--name", "cli product", "--wait", "-o", "c.npy", "--server", server.url],
    { cwd: dir },
  );

  assert.equal(run.code, 0, run.stderr);
  const id = run.stdout.trim();
  assert.match(id, UUID, "stdout holds just the job id");
  assert.match(run.stderr, /submitted job .*: 37×29×23 f32, tile 16, 6 tiles/);
  assert.match(run.stderr, new RegExp(`job ${id} done: 6/6 verified \\(100%\\) in [\\d.]+ s`));
  assert.match(run.stderr, /wrote c\.npy: 37×23 f32 \(\d+(\.\d)? KiB\)/);
  const c = npyDecode(readFileSync(join(dir, "c.npy")));
  assert.deepEqual([c.dtype, c.rows, c.cols], ["f32", m, n]);
  assertClose(c.data, want, k);
  assert.ok(!existsSync(join(dir, "c.npy.part")), "no temporary file is left behind");
  assert.equal(workers.reduce((sum, w) => sum + w.stats.accepted, 0), 6);

  const jobs = await brain(["jobs", "--server", server.url]);
  assert.equal(jobs.code, 0, jobs.stderr);
  const [header, row, ...rest] = jobs.stdout.trimEnd().split("\n");
  assert.match(header, /^ID\s+STATUS\s+TILES\s+SHAPE\s+DTYPE\s+CREATED\s+NAME$/);
  assert.match(row, new RegExp(`^${id}\\s+done\\s+6/6\\s+37×29×23\\s+f32\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ\\s+cli product$`));
  assert.deepEqual(rest, []);

  const status = await brain(["status", id], { env: { BRAIN_SERVER: server.url } });
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^status\s+done$/m);
  assert.match(status.stdout, /^tiles\s+6\/6 verified \(100%\)$/m);
  assert.match(status.stdout, /^shape\s+37×29×23 f32 \(A 37×29, B 29×23\)$/m);
  assert.match(status.stdout, /^finished\s+\d{4}-/m);

  const again = await brain(["result", id, "-o", join(dir, "again.npy"), "--server", server.url]);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(readFileSync(join(dir, "again.npy")), readFileSync(join(dir, "c.npy")));

  // f64 without -o, k in two slices: the id and the way to fetch it are printed, and the job
  // takes the files' dtype.
  const f64 = writeInputs(dir, 9, 5, 11, { dtype: "f64", seed: 11, prefix: "d" });
  const waited = await brain(["submit", "da.npy", "db.npy", "--k-split", "2", "--wait", "--server", server.url], { cwd: dir });
  assert.equal(waited.code, 0, waited.stderr);
  const id64 = waited.stdout.trim();
  assert.match(waited.stderr, /: 9×5×11 f64, tile \d+ in 2 slices of k, 2 tiles/);
  assert.match(waited.stderr, new RegExp(`job ${id64} done: 2/2 verified`));
  assert.match((await brain(["status", id64, "--server", server.url])).stdout, /^tile\s+\d+, k in 2 slices$/m);
  assert.match(waited.stderr, new RegExp(`fetch it with: brain result ${id64} -o C.npy`));
  const job64 = (await api(server.url, `/api/jobs/${id64}`)).json;
  assert.equal(job64.dtype, "f64");
  assert.equal(job64.name, "da.npy × db.npy", "the name defaults to the input files");
  assert.equal((await brain(["result", id64, "-o", "d.npy", "--server", server.url], { cwd: dir })).code, 0);
  const d = npyDecode(readFileSync(join(dir, "d.npy")));
  assertClose(d.data, f64.want, 5, "f64");
});

test("cancel, a result before it is done, and --wait on a job that gets cancelled", async (t) => {
  const server = await startServer(t); // no workers: jobs stay queued until cancelled
  const dir = tempDir(t);
  writeInputs(dir, 2, 3, 2);
  const opts = { cwd: dir, env: { BRAIN_SERVER: server.url } };

  const submitted = await brain(["submit", "a.npy", "b.npy", "--tile", "1"], opts);
  assert.equal(submitted.code, 0, submitted.stderr);
  const id = submitted.stdout.trim();
  assert.match((await brain(["status", id], opts)).stdout, /^status\s+queued$/m);

  const early = await brain(["result", id, "-o", "c.npy"], opts);
  assert.equal(early.code, 1);
  assert.match(early.stderr, new RegExp(`409 Conflict: job ${id} is queued \\(0 of 4 tiles done\\)`));
  assert.ok(!existsSync(join(dir, "c.npy")) && !existsSync(join(dir, "c.npy.part")));

  const cancelled = await brain(["cancel", id], opts);
  assert.equal(cancelled.code, 0, cancelled.stderr);
  assert.equal(cancelled.stdout.trim(), `job ${id} cancelled with 0/4 tiles verified`);
  assert.equal((await api(server.url, `/api/jobs/${id}`)).json.status, "cancelled");
  const twice = await brain(["cancel", id], opts);
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, new RegExp(`^brain: error: server answered 409 Conflict: job ${id} is already cancelled$`, "m"));

  const waiting = brain(["submit", "a.npy", "b.npy", "--wait", "-o", "c.npy"], opts);
  let second;
  for (let i = 0; i < 200 && !second; i++) {
    second = (await api(server.url, "/api/jobs")).json.find((j) => j.id !== id);
    if (!second) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(second, "the waiting submission reached the server");
  assert.equal((await api(server.url, `/api/jobs/${second.id}`, { method: "DELETE" })).status, 200);
  const ended = await waiting;
  assert.equal(ended.code, 1);
  assert.match(ended.stderr, new RegExp(`brain: error: job ${second.id} cancelled`));
  assert.ok(!existsSync(join(dir, "c.npy")), "nothing is written for a cancelled job");
});

test("clear errors and a non-zero exit: unreachable server, unknown job, bad files, bad flags", async (t) => {
  const port = await closedPort();
  const down = await brain(["jobs", "--server", `http://127.0.0.1:${port}`]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, new RegExp(`^brain: error: cannot reach server at http://127\\.0\\.0\\.1:${port}: .*refused`, "mi"));

  const server = await startServer(t);
  const dir = tempDir(t);
  writeInputs(dir, 4, 3, 5);
  const opts = { cwd: dir, env: { BRAIN_SERVER: server.url } };

  const unknown = await brain(["status", "nope"], opts);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /server answered 404 Not Found: no job with id nope/);

  const missing = await brain(["submit", "missing.npy", "b.npy"], opts);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot read missing\.npy: No such file or directory/);

  writeFileSync(join(dir, "junk.npy"), "not an npy file");
  const junk = await brain(["submit", "junk.npy", "b.npy"], opts);
  assert.equal(junk.code, 1);
  assert.match(junk.stderr, /400 Bad Request: .*not a valid \.npy/);

  const mismatched = await brain(["submit", "b.npy", "b.npy"], opts);
  assert.equal(mismatched.code, 1);
  assert.match(mismatched.stderr, /400 Bad Request: .*inner dimensions differ/);

  const nowhere = await brain(["submit", "a.npy", "b.npy", "--wait", "-o", "no/such/dir/c.npy"], opts);
  assert.equal(nowhere.code, 1);
  assert.match(nowhere.stderr, /cannot write no\/such\/dir\/c\.npy: folder no\/such\/dir does not exist/);

  assert.deepEqual((await api(server.url, "/api/jobs")).json, [], "no failed submission was stored");

  const badUrl = await brain(["jobs", "--server", "localhost:3000"]);
  assert.equal(badUrl.code, 1);
  assert.match(badUrl.stderr, /--server must be an http:\/\/ or https:\/\/ URL, not "localhost:3000"/);
  const badTile = await brain(["submit", "a.npy", "b.npy", "--tile", "0"], opts);
  assert.equal(badTile.code, 2, "usage errors exit 2, as clap does");
  assert.match(badTile.stderr, /--tile/);
});

test("a server with API_TOKEN: without the token the CLI says so; with --token or API_TOKEN it works", async (t) => {
  const token = "s3cret-token";
  const server = await startServer(t, { env: { API_TOKEN: token } });
  await startWorker(t, server.url);
  const dir = tempDir(t);
  const { want } = writeInputs(dir, 5, 4, 3);
  const opts = { cwd: dir, env: { BRAIN_SERVER: server.url } };

  const refused = await brain(["submit", "a.npy", "b.npy", "--wait", "-o", "c.npy"], opts);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /401 Unauthorized: missing or wrong API token .*; pass --token or set API_TOKEN/);
  const wrong = await brain(["submit", "a.npy", "b.npy", "--token", "s3cret-tokem"], opts);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /401 Unauthorized/);

  const run = await brain(["submit", "a.npy", "b.npy", "--wait", "-o", "c.npy", "--token", token], opts);
  assert.equal(run.code, 0, run.stderr);
  const id = run.stdout.trim();
  assertClose(npyDecode(readFileSync(join(dir, "c.npy"))).data, want, 4);

  assert.equal((await brain(["jobs"], opts)).code, 0, "listing stays public");
  const noToken = await brain(["result", id, "-o", "d.npy"], opts);
  assert.equal(noToken.code, 1);
  assert.match(noToken.stderr, /401 Unauthorized/);
  const fromEnv = await brain(["result", id, "-o", "d.npy"], { cwd: dir, env: { BRAIN_SERVER: server.url, API_TOKEN: token } });
  assert.equal(fromEnv.code, 0, fromEnv.stderr);
  assert.deepEqual(readFileSync(join(dir, "d.npy")), readFileSync(join(dir, "c.npy")));
});

test("a missing or wrong token is named every time, for tiny uploads and for uploads of several MB", async (t) => {
  // The server used to answer 401 before reading the upload and close the connection under
  // it, so the CLI, still sending, often saw a broken pipe instead of the answer.
  const token = "s3cret-token";
  const server = await startServer(t, { env: { API_TOKEN: token } });
  const dir = tempDir(t);
  writeInputs(dir, 5, 4, 3, { prefix: "tiny-" });
  const [m, k] = [1024, 1024]; // 4 MiB each as f32: well past what the server reads of a refused upload
  writeFileSync(join(dir, "big-a.npy"), npyEncode("f32", m, k, new Float64Array(m * k)));
  writeFileSync(join(dir, "big-b.npy"), npyEncode("f32", k, 1, new Float64Array(k)));
  const opts = { cwd: dir, env: { BRAIN_SERVER: server.url } };

  for (let i = 0; i < 20; i++) {
    const size = i % 2 === 0 ? "tiny" : "big";
    const token = i % 4 < 2 ? [] : ["--token", "s3cret-tokem"];
    const run = await brain(["submit", `${size}-a.npy`, `${size}-b.npy`, ...token], opts);
    assert.equal(run.code, 1, `try ${i} (${size}, ${token.length ? "wrong" : "no"} token): ${run.stderr}`);
    assert.match(
      run.stderr,
      /^brain: error: server answered 401 Unauthorized: missing or wrong API token .*; pass --token or set API_TOKEN$/m,
      `try ${i} (${size}, ${token.length ? "wrong" : "no"} token)`,
    );
  }
  assert.deepEqual((await api(server.url, "/api/jobs")).json, [], "nothing was stored");
});

/**
 * A proxy in front of `upstream` that records each request's Range and If-Range and, while
 * `cut.after` is set, sends only that many bytes of the next result's body and then closes
 * the connection (once).
 */
async function flakyProxy(t, upstream) {
  const seen = [];
  const cut = { after: null };
  const proxy = createHttpServer((req, res) => {
    seen.push({ path: req.url, range: req.headers.range, ifRange: req.headers["if-range"] });
    const up = httpRequest(upstream + req.url, { method: req.method, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode, upRes.headers);
      const limit = req.url.endsWith("/result") ? cut.after : null;
      if (limit === null) return upRes.pipe(res);
      cut.after = null;
      let sent = 0;
      upRes.on("data", (chunk) => {
        if (sent >= limit) return;
        const piece = chunk.subarray(0, limit - sent);
        sent += piece.length;
        if (sent < limit) return res.write(piece);
        res.write(piece, () => res.socket.destroy());
        upRes.destroy();
      });
    });
    up.on("error", () => res.socket?.destroy());
    req.pipe(up);
  });
  await new Promise((res) => proxy.listen(0, "127.0.0.1", res));
  t.after(() => new Promise((res) => {
    proxy.close(res);
    proxy.closeAllConnections();
  }));
  return { url: `http://127.0.0.1:${proxy.address().port}`, seen, cut };
}

test("an interrupted download keeps its .part and the next run resumes it; a stale one is replaced", async (t) => {
  const server = await startServer(t);
  await startWorker(t, server.url);
  const dir = tempDir(t);
  const [m, k, n] = [300, 4, 300]; // 351 KiB of f32: more than one of the server's read chunks
  writeInputs(dir, m, k, n, { seed: 31 });
  const run = await brain(["submit", "a.npy", "b.npy", "--tile", "100", "--wait", "-o", "whole.npy", "--server", server.url], { cwd: dir });
  assert.equal(run.code, 0, run.stderr);
  const id = run.stdout.trim();
  const whole = readFileSync(join(dir, "whole.npy"));
  const size = 128 + m * n * 4;
  assert.equal(whole.length, size);
  const proxy = await flakyProxy(t, server.url);
  const opts = { cwd: dir, env: { BRAIN_SERVER: proxy.url } };
  const etag = (await api(server.url, `/api/jobs/${id}/result`, { raw: true })).headers.get("etag");

  // Cut off after 100,000 bytes: an error that says how to resume, the bytes kept aside.
  proxy.cut.after = 100_000;
  const broken = await brain(["result", id, "-o", "c.npy"], opts);
  assert.equal(broken.code, 1);
  assert.match(broken.stderr, new RegExp(`broke off after \\d+ of ${size} bytes .*c\\.npy\\.part keeps what came: run the same command again to resume`));
  assert.ok(!existsSync(join(dir, "c.npy")), "no truncated file under the result's name");
  const kept = readFileSync(join(dir, "c.npy.part"));
  assert.ok(kept.length > 0 && kept.length <= 100_000, `${kept.length} bytes kept`);
  assert.deepEqual(kept, whole.subarray(0, kept.length));

  // The next run asks for the rest, from the same file only, and ends with the whole result.
  const resumed = await brain(["result", id, "-o", "c.npy"], opts);
  assert.equal(resumed.code, 0, resumed.stderr);
  const asked = proxy.seen.at(-1);
  assert.deepEqual([asked.range, asked.ifRange], [`bytes=${kept.length}-`, etag]);
  assert.deepEqual(readFileSync(join(dir, "c.npy")), whole, "identical to a one-shot download");
  assert.ok(!existsSync(join(dir, "c.npy.part")) && !existsSync(join(dir, "c.npy.part.etag")), "nothing left aside");

  // A .part from another file (its validator is stale): the server sends the whole result,
  // which replaces it rather than being appended to it.
  writeFileSync(join(dir, "d.npy.part"), Buffer.alloc(5000, 7));
  writeFileSync(join(dir, "d.npy.part.etag"), `${proxy.url}/api/jobs/${id}/result\n"0-0-0"\n`);
  const stale = await brain(["result", id, "-o", "d.npy"], opts);
  assert.equal(stale.code, 0, stale.stderr);
  assert.deepEqual([proxy.seen.at(-1).range, proxy.seen.at(-1).ifRange], ["bytes=5000-", '"0-0-0"']);
  assert.deepEqual(readFileSync(join(dir, "d.npy")), whole);

  // A .part as long as the result (the last run stopped before renaming): 416, then whole.
  writeFileSync(join(dir, "e.npy.part"), whole);
  writeFileSync(join(dir, "e.npy.part.etag"), `${proxy.url}/api/jobs/${id}/result\n${etag}\n`);
  const full = await brain(["result", id, "-o", "e.npy"], opts);
  assert.equal(full.code, 0, full.stderr);
  assert.deepEqual(proxy.seen.slice(-2).map((r) => r.range), [`bytes=${size}-`, undefined]);
  assert.deepEqual(readFileSync(join(dir, "e.npy")), whole);

  // The JSON form, encoded from the same file piece by piece, holds the same values.
  const json = await api(server.url, `/api/jobs/${id}/result?format=json`);
  assert.deepEqual(json.json.c.flat(), Array.from(npyDecode(whole).data));
});
