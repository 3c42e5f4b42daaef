// Jobs bigger than memory (#16): the pieces shared by the memory-limited test
// (bigjob.test.mjs), the full-size run (`make bench-bigjob`) and the storage benchmark
// (`make bench-storage`, bench-storage.mjs): `.npy` inputs written straight to disk, uploads
// through the real HTTP API with curl (which streams a file from disk, so the client never
// holds it), the server's resident memory sampled from /proc, and disk usage as `du` counts it.
import { spawn } from "node:child_process";
import { closeSync, createReadStream, existsSync, openSync, readFileSync, readSync, readdirSync, statSync, writeSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { connect, once } from "./helpers.mjs";

export const MiB = 1024 * 1024;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A version 1.0 `.npy` header for a C-order 2-D `<f4` or `<f8` array, padded to 64 bytes. */
export function npyHeader(rows, cols, descr = "<f4") {
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
  const unpadded = 10 + dict.length + 1;
  dict += " ".repeat((64 - (unpadded % 64)) % 64) + "\n";
  const head = Buffer.alloc(10);
  Buffer.from([0x93, ...Buffer.from("NUMPY"), 1, 0]).copy(head);
  head.writeUInt16LE(dict.length, 8);
  return Buffer.concat([head, Buffer.from(dict, "latin1")]);
}

/**
 * Writes a rows×cols f32 `.npy` file of values in [-1, 1): one 4 MiB block of seeded values
 * repeated, so a GiB takes seconds (the data's variety does not matter to storage). Returns
 * the file's size in bytes.
 */
export function writeNpyF32(path, rows, cols, seed = 1) {
  const header = npyHeader(rows, cols);
  const block = new Float32Array(MiB);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < block.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    block[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  const bytes = Buffer.from(block.buffer);
  const fd = openSync(path, "w");
  try {
    writeSync(fd, header);
    let left = rows * cols * 4;
    while (left > 0) {
      const n = Math.min(left, bytes.length);
      writeSync(fd, bytes, 0, n);
      left -= n;
    }
  } finally {
    closeSync(fd);
  }
  return statSync(path).size;
}

/** Runs a command; resolves `{ code, signal, stdout, stderr, ms }` (never rejects on exit). */
export function run(cmd, args, { timeoutMs = 600000 } = {}) {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("error", rej);
    p.on("exit", (code, signal) => {
      clearTimeout(timer);
      res({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

/**
 * Submits A·B as two `.npy` files in one multipart POST with curl, which reads them from disk
 * as it sends. Resolves `{ status, json, text, seconds, curlCode, curlError }`; `status` is 0
 * when the connection broke (for example, the server was killed during the upload).
 */
export async function submitFiles(url, aPath, bPath, { tile, name = "bigjob", timeoutMs = 600000 } = {}) {
  const args = ["-sS", "-o", "-", "-w", "\n%{http_code} %{time_total}", "-F", `a=@${aPath};type=application/octet-stream`,
    "-F", `b=@${bPath};type=application/octet-stream`, "-F", `name=${name}`];
  if (tile) args.push("-F", `tile=${tile}`);
  args.push(`${url}/api/jobs`);
  const r = await run("curl", args, { timeoutMs });
  const lines = r.stdout.trimEnd().split("\n");
  const [code, time] = (lines.pop() ?? "").split(" ");
  const text = lines.join("\n");
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  // A 100 (Continue) and nothing after it: the connection broke before an answer.
  const status = Number(code) >= 200 ? Number(code) : 0;
  return { status, json, text, seconds: Number(time) || r.ms / 1000, curlCode: r.code, curlError: r.stderr.trim() };
}

/**
 * Submits two `.npy` files as a multipart body streamed from disk in 4 MiB reads by Node's own
 * HTTP client (`curl -F` tops out near 420 MB/s on this machine, below the disk), to `url` +
 * `path`. Resolves like [`submitFiles`].
 */
export async function streamFiles(url, aPath, bPath, { tile, name = "bigjob", path = "/api/jobs" } = {}) {
  const boundary = `----brain${Date.now()}`;
  const head = (field, file) =>
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${file}"\r\n` +
      "Content-Type: application/octet-stream\r\n\r\n");
  const text = (field, value) => Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"\r\n\r\n${value}\r\n`);
  const fields = [text("name", name), ...(tile ? [text("tile", tile)] : [])];
  const files = [["a", aPath], ["b", bPath]];
  const tail = Buffer.from(`--${boundary}--\r\n`);
  const length = fields.reduce((s, f) => s + f.length, 0) + tail.length +
    files.reduce((s, [f, p]) => s + head(f, `${f}.npy`).length + statSync(p).size + 2, 0);
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = http.request(url + path, {
      method: "POST",
      headers: { "content-type": `multipart/form-data; boundary=${boundary}`, "content-length": length },
    }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        let json;
        try { json = JSON.parse(body); } catch { json = undefined; }
        resolve({ status: res.statusCode, json, text: body, seconds: (performance.now() - t0) / 1000 });
      });
    });
    req.on("error", (e) => resolve({ status: 0, text: "", seconds: (performance.now() - t0) / 1000, curlError: String(e) }));
    (async () => {
      for (const f of fields) req.write(f);
      for (const [field, p] of files) {
        req.write(head(field, `${field}.npy`));
        for await (const chunk of createReadStream(p, { highWaterMark: 4 * MiB })) {
          if (!req.write(chunk)) await new Promise((r) => req.once("drain", r));
        }
        req.write("\r\n");
      }
      req.end(tail);
    })();
  });
}

/** A local socket that reads and drops a request, then answers 201: the upload client's ceiling. */
export async function nullSink() {
  const server = net.createServer();
  server.on("connection", (socket) => {
    // The request ends at its Content-Length, not at a closed socket.
    let head = "";
    let expected = Infinity;
    let got = 0;
    socket.on("data", (d) => {
      if (expected === Infinity) {
        head += d.toString("latin1");
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        expected = Number(/content-length: (\d+)/i.exec(head.slice(0, end))?.[1] ?? 0);
        got = head.length - end - 4;
      } else {
        got += d.length;
      }
      if (got >= expected) socket.end("HTTP/1.1 201 Created\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

/** Downloads a job's result to `path` with curl; resolves `{ status, bytes, seconds }`. */
export async function downloadFile(url, id, path, { timeoutMs = 600000 } = {}) {
  const r = await run("curl", ["-sS", "-o", path, "-w", "%{http_code} %{time_total} %{size_download}", `${url}/api/jobs/${id}/result`], { timeoutMs });
  const [code, time, size] = r.stdout.trim().split(" ");
  return { status: Number(code) || 0, seconds: Number(time), bytes: Number(size), curlError: r.stderr.trim() };
}

/** `name:` (e.g. VmRSS, VmHWM) of a process from /proc, in bytes; NaN once it has exited. */
export function procStatus(pid, name) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`${name}:\\s+(\\d+) kB`));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * Samples a process's VmRSS every `ms` (VmHWM covers the process's whole life, so a phase's
 * peak comes from samples). `phase(name)` starts a new phase; `peaks()` gives each phase's
 * highest sample in bytes.
 */
export function rssSampler(pid, ms = 50) {
  const peaks = new Map();
  let current = "start";
  const sample = () => {
    const rss = procStatus(pid, "VmRSS");
    if (Number.isFinite(rss)) peaks.set(current, Math.max(peaks.get(current) ?? 0, rss));
  };
  const timer = setInterval(sample, ms);
  return {
    phase(name) {
      sample();
      current = name;
      sample();
    },
    peak: (name) => peaks.get(name) ?? NaN,
    stop() {
      sample();
      clearInterval(timer);
    },
  };
}

/** Bytes on disk (allocated blocks, as `du` counts) of a file or a folder's tree. */
export function diskBytes(path) {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.blocks * 512;
  return readdirSync(path).reduce((sum, e) => sum + diskBytes(join(path, e)), st.blocks * 512);
}

/** The job's state from the API. */
export async function job(url, id) {
  const res = await fetch(`${url}/api/jobs/${id}`);
  return res.json();
}

/** Waits (bounded) until `pred(job)` holds; throws with the last state otherwise. */
export async function waitJob(url, id, pred, { ms = 120000, what = "condition" } = {}) {
  const deadline = Date.now() + ms;
  let j;
  while (Date.now() < deadline) {
    j = await job(url, id);
    if (pred(j)) return j;
    if (["failed", "cancelled"].includes(j?.status)) throw new Error(`job ${id} ended ${j.status}: ${j.error}`);
    await sleep(100);
  }
  throw new Error(`job ${id}: no ${what} within ${ms} ms (last: ${JSON.stringify(j)})`);
}

/** Waits (bounded) until `path` no longer exists. */
export async function waitGone(path, ms = 30000) {
  const deadline = Date.now() + ms;
  while (existsSync(path) && Date.now() < deadline) await sleep(100);
  return !existsSync(path);
}

export const mb = (bytes) => (bytes / 1e6).toFixed(0);

/**
 * A volunteer that computes with the real worker-wasm kernel (the page's build in `pkg`) in a
 * Node worker thread (compute-thread.mjs, the load harness's), keeping `inFlight` tasks
 * requested, with a panel cache of `panelCache` bytes announced to the server. Fast enough for
 * an 8192³ product here, which the test workers' JavaScript loop is not. `stop()` closes it.
 */
export async function startWasmWorker(url, { pkg, name = "wasm", inFlight = 2, panelCache = 64 * MiB }) {
  const thread = new Worker(new URL("./compute-thread.mjs", import.meta.url), { workerData: { pkg } });
  await new Promise((res, rej) => {
    thread.once("message", res);
    thread.once("error", rej);
  });
  const pending = new Map();
  let seq = 0;
  thread.on("message", ({ id, c }) => pending.get(id)?.(c));
  const stats = { accepted: 0, refused: 0 };
  const socket = connect(url);
  socket.on("connect", () => socket.emit("register_worker", { name, threads: 1, panel_cache: { budget_bytes: panelCache } }));
  socket.on("registration_ack", () => {
    for (let i = 0; i < inFlight; i++) socket.emit("request_task");
  });
  socket.on("task_cancelled", () => socket.emit("request_task"));
  socket.on("task_assigned", async (task) => {
    const own = (x) => x && (x.byteOffset === 0 && x.byteLength === x.buffer.byteLength ? x : new Uint8Array(x));
    const [a, b] = [own(task.a), own(task.b)];
    const c = await new Promise((res) => {
      const id = seq++;
      pending.set(id, (c) => {
        pending.delete(id);
        res(c);
      });
      thread.postMessage(
        { id, dtype: task.dtype, m: task.m, k: task.k, n: task.n, a, b, aKey: task.a_key, bKey: task.b_key, keep: true, evict: task.evict },
        [...new Set([a, b].filter(Boolean).map((x) => x.buffer))],
      );
    });
    socket.emit("task_result", { task_id: task.task_id, c: Buffer.from(c.buffer, c.byteOffset, c.byteLength), compute_ms: 1 });
    socket.emit("request_task");
  });
  socket.on("result_ack", (ack) => (ack.accepted ? stats.accepted++ : stats.refused++));
  await once(socket, "registration_ack", 30000);
  return {
    stats,
    stop() {
      socket.close();
      thread.terminate();
    },
  };
}

/** Entry (i, j) of A·B (A m×k, B k×n) read from the `.npy` files, summed in f64, with the sum
 * of its terms' magnitudes (for an f32 error bound): a spot check. */
export function entryFromFiles(aPath, bPath, k, n, i, j) {
  const fdA = openSync(aPath, "r");
  const fdB = openSync(bPath, "r");
  try {
    const row = Buffer.alloc(k * 4);
    readSync(fdA, row, 0, k * 4, npyOffset(aPath) + i * k * 4);
    const x = new Float32Array(row.buffer, row.byteOffset, k);
    const one = Buffer.alloc(4);
    const offB = npyOffset(bPath);
    let sum = 0;
    let abs = 0;
    for (let p = 0; p < k; p++) {
      readSync(fdB, one, 0, 4, offB + (p * n + j) * 4);
      sum += x[p] * one.readFloatLE(0);
      abs += Math.abs(x[p] * one.readFloatLE(0));
    }
    return { sum, abs };
  } finally {
    closeSync(fdA);
    closeSync(fdB);
  }
}

/** The data's offset in a version 1 `.npy` file. */
export function npyOffset(path) {
  const fd = openSync(path, "r");
  try {
    const head = Buffer.alloc(10);
    readSync(fd, head, 0, 10, 0);
    return 10 + head.readUInt16LE(8);
  } finally {
    closeSync(fd);
  }
}

/** Element `index` of an f32 `.npy` file. */
export function f32At(path, index) {
  const fd = openSync(path, "r");
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, npyOffset(path) + index * 4);
    return b.readFloatLE(0);
  } finally {
    closeSync(fd);
  }
}
