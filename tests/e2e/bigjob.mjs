// Jobs bigger than memory (#16): the pieces shared by the memory-limited test
// (bigjob.test.mjs), the full-size run (`make bench-bigjob`) and the storage benchmark
// (`make bench-storage`, bench-storage.mjs): `.npy` inputs written straight to disk, uploads
// through the real HTTP API with curl (which streams a file from disk, so the client never
// holds it), the server's resident memory sampled from /proc, and disk usage as `du` counts it.
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, readdirSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";

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
