// Shared helpers for the end-to-end tests: start the real server binary on an ephemeral port
// with a temporary database, speak Socket.io with the official client, and check products
// against tests/support/matrix.mjs's reference, computed independently of the server.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import { randomMatrix, referenceProduct } from "../support/matrix.mjs";
import { spawnServer } from "../support/server.mjs";
import { execFileSync } from "node:child_process";
import { createDatabase, psql, startPostgres } from "../support/postgres.mjs";
import { decodeNpy, encodeNpy } from "../../web/src/common/npy.js";

const here = dirname(fileURLToPath(import.meta.url));
export const SERVER_BIN =
  process.env.BRAIN_SERVER_BIN ?? resolve(here, "../../target/debug/brain-server");

/** A fresh folder for one test's database and jobs' files; removed when the test ends. */
export function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), "brain-e2e-"));
  t?.after(async () => {
    // This hook runs before the ones that stop the test's servers, and a server still
    // running writes into its folder (its jobs' files): removing the folder under it fails
    // with ENOTEMPTY. Stop the servers that live here first.
    const here = [...servers.values()].filter((s) => s.dbPath.startsWith(dir));
    await Promise.all(here.map((s) => s.kill()));
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/**
 * Starts the server binary and resolves once it prints its address. `port: 0` (the default)
 * lets the OS pick; a restart passes the previous port so clients can reconnect.
 */
export async function startServer(t, { dbPath, port = 0, env = {} } = {}) {
  dbPath ??= join(tempDir(t), "brain.db");
  // A restart on the same path is the same instance, and takes back the leases it left.
  if (ON_POSTGRES) env = { DATABASE_URL: await postgresDatabase(dbPath), INSTANCE_ID: instanceName(dbPath), ...env };
  const server = await spawnServer(SERVER_BIN, {
    dbPath,
    port,
    // Info level, so that a failing test can show what the server did (see `serverLog`).
    env: { RUST_LOG: process.env.RUST_LOG ?? "info", ...env },
    webDir: join(tmpdir(), "brain-e2e-no-web"),
    startMs: 20000,
  });
  server.databaseUrl = env.DATABASE_URL;
  servers.set(server.url, server);
  t?.after(() => {
    servers.delete(server.url);
    if (t.passed === false) t.diagnostic(`server ${server.url}:\n${serverLog(server)}`);
    return server.kill();
  });
  return server;
}

/**
 * `BRAIN_TEST_DATABASE=postgres` runs the suite against PostgreSQL: one private instance per
 * test file (each file is its own process), and a database of its own for each `dbPath` a
 * test gives, so that a restart on the same path finds the same database. The jobs' files
 * still go to DATA_DIR beside that path.
 */
export const ON_POSTGRES = process.env.BRAIN_TEST_DATABASE === "postgres";
let postgres;
const databases = new Map();
async function postgresDatabase(dbPath) {
  if (!databases.has(dbPath)) {
    postgres ??= startPostgres();
    databases.set(dbPath, createDatabase(await postgres));
  }
  return databases.get(dbPath);
}

/**
 * Runs `sql` (statements both engines take) on the database of `dbPath`, while no server uses
 * it: python3's sqlite3 on SQLite, psql on PostgreSQL. For tests that move the database's
 * clock, as a day passing would.
 */
export async function runSql(dbPath, sql) {
  if (ON_POSTGRES) {
    const url = await postgresDatabase(dbPath);
    return psql(await postgres, url.split("/").pop(), sql);
  }
  const script = "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\ndb.executescript(sys.argv[2])\ndb.close()";
  return execFileSync("python3", ["-c", script, dbPath, sql], { encoding: "utf8" });
}

/** An `INSTANCE_ID` for the server of `dbPath`: its folder and file, as the id's characters allow. */
const instanceName = (dbPath) => dbPath.split("/").slice(-2).join(".").replace(/[^A-Za-z0-9._-]/g, "_").slice(-64);

/** Servers of running tests by URL, so a timed-out wait can quote its server's log. */
const servers = new Map();

/** The last `lines` lines of the server's log. */
export function serverLog(server, lines = 30) {
  return server.log().trimEnd().split("\n").slice(-lines).join("\n") || "(empty)";
}

/**
 * Resolves with the next `event` on `socket`, or rejects after `ms` with what the socket and,
 * for a socket from `connect`, its server's log say: a rare CI failure must explain itself.
 */
export function once(socket, event, ms = 10000) {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`no ${event} within ${ms} ms${why(socket)}`)), ms);
    socket.once(event, (data) => {
      clearTimeout(timer);
      res(data);
    });
  });
}

function why(socket) {
  const state = socket.history;
  if (!state) return "";
  const server = servers.get(state.url);
  return (
    `\nsocket ${socket.id ?? "-"}: ${socket.connected ? "connected" : "not connected"}; ` +
    `${state.events.join(", ") || "no connection events"}` +
    (server ? `\nserver log:\n${serverLog(server)}` : "")
  );
}

/** Connects a raw Socket.io client (websocket only, as the page does). */
export function connect(url, opts = {}) {
  const socket = io(url, { transports: ["websocket"], reconnection: false, forceNew: true, ...opts });
  const history = { url: new URL(url).origin, events: [] };
  const t0 = Date.now();
  const note = (what) => history.events.push(`${what} at +${Date.now() - t0} ms`);
  socket.on("connect", () => note("connect"));
  socket.on("connect_error", (e) => note(`connect_error (${e.message})`));
  socket.on("disconnect", (reason) => note(`disconnect (${reason})`));
  socket.history = history;
  return socket;
}

/** Connects and registers; resolves with `{ socket, ack }`. */
export async function registered(t, url, info = { name: "test" }) {
  const socket = connect(url);
  t?.after(() => socket.close());
  const ackPromise = once(socket, "registration_ack");
  socket.emit("register_worker", info);
  return { socket, ack: await ackPromise };
}

// --- matrices -----------------------------------------------------------------------------

// The seeded generator and the reference product are shared with the browser tests and the
// kernel check (tests/support/matrix.mjs); only what speaks to this server's API is here.
export { randomMatrix, referenceProduct };

/** Rows of plain numbers, as a JSON body carries them (a typed array would serialise as an
 * object). */
export const rowsOf = (flat, rows, cols) =>
  Array.from({ length: rows }, (_, i) => Array.from(flat.slice(i * cols, (i + 1) * cols)));

const ARRAY = { f32: Float32Array, f64: Float64Array };

/** Little-endian row-major bytes of `values` as `dtype`. */
export function toBytes(dtype, values) {
  return Buffer.from(new ARRAY[dtype](values).buffer);
}

/** Numbers from little-endian bytes (a Buffer or ArrayBuffer): matrix data must arrive as a
 * binary attachment, never as a JSON array of numbers. */
export function fromBytes(dtype, buf) {
  if (!(buf instanceof ArrayBuffer || ArrayBuffer.isView(buf)))
    throw new Error(`expected binary matrix data, got ${typeof buf} ${Array.isArray(buf) ? "array" : ""}`);
  const u8 = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  const copy = u8.slice(); // aligned copy
  return new ARRAY[dtype](copy.buffer);
}

/** A `.npy` file of `values` as `dtype`, written by the page's own codec. */
export function npyEncode(dtype, rows, cols, values) {
  return Buffer.from(encodeNpy(new ARRAY[dtype](values), rows, cols));
}

/** Parses a `.npy` file (the server's) with the page's own codec: `{ dtype, rows, cols, data }`. */
export const npyDecode = decodeNpy;

/** Asserts |got - want| within a bound that grows with k, entry by entry. */
export function assertClose(got, want, k, dtype = "f32") {
  const eps = dtype === "f32" ? 1.2e-7 : 2.3e-16;
  if (got.length !== want.length) throw new Error(`length ${got.length} != ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const tol = 4 * k * eps * Math.max(1, Math.abs(want[i])) + 1e-6;
    if (!(Math.abs(got[i] - want[i]) <= tol))
      throw new Error(`entry ${i}: got ${got[i]}, want ${want[i]} (tolerance ${tol})`);
  }
}

// --- HTTP -----------------------------------------------------------------------------------

export async function api(url, path, { method = "GET", body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { ...headers } };
  if (body instanceof FormData) init.body = body;
  else if (typeof body === "string") {
    init.body = body;
    init.headers["content-type"] ??= "application/json";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const res = await fetch(url + path, init);
  if (raw) return res;
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

/** A series without labels from the server's /metrics (NaN when absent). */
export async function metric(url, name) {
  const text = (await api(url, "/metrics")).text;
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : NaN;
}

/**
 * Submits A·B of deterministic random matrices as JSON and returns the job id with the
 * product computed here, for comparison with what the grid returns.
 */
export async function submitRandom(url, m, k, n, tile, seed = 1, more = {}) {
  const a = randomMatrix(m, k, "f64", seed);
  const b = randomMatrix(k, n, "f64", seed + 1);
  const res = await api(url, "/api/jobs", { method: "POST", body: { a: rowsOf(a, m, k), b: rowsOf(b, k, n), tile, ...more } });
  if (res.status !== 201) throw new Error(`submit: ${res.status} ${res.text}`);
  return { id: res.json.id, want: referenceProduct(a, b, m, k, n), k, tasks: res.json.tasks_total };
}

/** Polls a job until `done` (or another final state) or the time runs out. */
export async function waitForJob(url, id, { status = "done", ms = 30000 } = {}) {
  const deadline = Date.now() + ms;
  let job;
  while (Date.now() < deadline) {
    job = (await api(url, `/api/jobs/${id}`)).json;
    if (job?.status === status) return job;
    if (["done", "failed", "cancelled"].includes(job?.status) && job.status !== status)
      throw new Error(`job ended ${job.status}: ${job.error}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`job ${id} not ${status} in ${ms} ms: ${JSON.stringify(job)}`);
}

export async function downloadNpy(url, id, headers = {}) {
  const res = await api(url, `/api/jobs/${id}/result`, { raw: true, headers });
  if (res.status !== 200) throw new Error(`result: ${res.status} ${await res.text()}`);
  return npyDecode(Buffer.from(await res.arrayBuffer()));
}

// --- workers --------------------------------------------------------------------------------

/**
 * A worker that serves tasks with a plain triple loop. `inFlight` requests are kept open.
 * It keeps the token from `registration_ack` and presents it when it reconnects, as the page
 * does, and heartbeats at the interval the server asks for. `behaviour` makes it misbehave:
 *   { holdFirst: true }   keeps its first task and never answers it
 *   { holdAll: true }     never answers any task (and never heartbeats)
 *   { failAll: "msg" }    reports every task as failed
 *   { failIf: (task) => "msg" | null }  reports the tasks it names as failed
 *   { holdAfter: n }      answers its first n tasks, then holds every task it is given and asks
 *                         for another (a hoarder with a measured speed)
 *   { lie: "perturb" | "zeros" | "shape" }  returns wrong results
 *   { delayMs }           waits before answering
 *   { heartbeat: false }  sends no heartbeats
 */
export async function startWorker(t, url, { name = "w", inFlight = 2, behaviour = {}, reconnection = false, panelCache, headers } = {}) {
  const socket = connect(url, {
    reconnection: Boolean(reconnection), reconnectionDelay: 200, reconnectionDelayMax: 1000,
    ...(headers ? { extraHeaders: headers } : {}),
  });
  // `reconnection: "as the page"` also comes back after the server closed the connection on
  // purpose (its shutdown), which socket.io does not retry by itself, and drops the tasks of
  // the connection that ended rather than answer them on the next; the page does both.
  let connection = 0;
  if (reconnection === "as the page")
    socket.on("disconnect", (reason) => {
      connection++;
      if (reason === "io server disconnect") setTimeout(() => socket.connect(), 200);
    });
  const stats = {
    assigned: 0, accepted: 0, refused: 0, reasons: [], tasks: [], tiles: [], cancelled: [], quarantined: null,
    registrations: 0, bytesIn: 0, fullTasks: 0, evicted: 0, missing: 0,
  };
  // The panel cache, when announced: key → bytes, kept exactly as the server says.
  const cache = new Map();
  const w = { socket, stats, held: [], token: undefined, workerId: undefined, cache };
  let beat;
  socket.on("registration_ack", (ack) => {
    stats.registrations++;
    w.token = ack.token;
    w.workerId = ack.worker_id;
    clearInterval(beat);
    if (behaviour.heartbeat !== false && !behaviour.holdAll)
      beat = setInterval(() => socket.emit("heartbeat"), ack.heartbeat_interval_ms);
    if (ack.quarantined) stats.quarantined = ack.quarantined;
    else for (let i = 0; i < inFlight; i++) socket.emit("request_task");
  });
  socket.on("disconnect", () => clearInterval(beat));
  socket.on("quarantined", ({ reason }) => (stats.quarantined = reason));
  socket.on("task_cancelled", ({ task_id }) => stats.cancelled.push(task_id));
  socket.on("connect", () => {
    cache.clear(); // a new connection starts with an empty cache on the server's side too
    const info = { name, threads: 1, token: w.token };
    if (panelCache) info.panel_cache = { budget_bytes: panelCache };
    socket.emit("register_worker", info);
  });
  socket.on("task_assigned", async (task) => {
    stats.assigned++;
    stats.tasks.push(task.task_id);
    // Which tile: a caching worker's panel keys name its row of A and column of B.
    if (task.a_key && task.b_key) stats.tiles.push([Number(task.a_key.split(":").pop()), Number(task.b_key.split(":").pop())]);
    const holdNow = behaviour.holdAfter !== undefined && stats.accepted + w.held.length >= behaviour.holdAfter
      && stats.assigned > behaviour.holdAfter;
    if (behaviour.holdAll || holdNow || (behaviour.holdFirst && w.held.length === 0)) {
      w.held.push(task);
      if (holdNow) socket.emit("request_task");
      return;
    }
    const failure = behaviour.failAll ?? behaviour.failIf?.(task);
    if (failure) {
      stats.failed = (stats.failed ?? 0) + 1;
      socket.emit("task_failed", { task_id: task.task_id, error: failure });
      socket.emit("request_task");
      return;
    }
    const from = connection;
    if (behaviour.delayMs) await new Promise((r) => setTimeout(r, behaviour.delayMs));
    if (from !== connection) return;
    if (stats.cancelled.includes(task.task_id)) return socket.emit("request_task");
    stats.bytesIn += (task.a?.length ?? 0) + (task.b?.length ?? 0);
    if (task.a && task.b) stats.fullTasks++;
    if (behaviour.forgetCache && stats.assigned % 5 === 0) cache.clear();
    // Resolve this task's panels first, then store the new ones, then drop what the server evicts.
    const aBytes = task.a ?? cache.get(task.a_key);
    const bBytes = task.b ?? cache.get(task.b_key);
    if (!aBytes || !bBytes) {
      stats.missing++;
      socket.emit("panel_missing", { task_id: task.task_id });
      return;
    }
    if (panelCache) {
      if (task.a) cache.set(task.a_key, task.a);
      if (task.b) cache.set(task.b_key, task.b);
      for (const key of task.evict ?? []) {
        cache.delete(key);
        stats.evicted++;
      }
    }
    const a = fromBytes(task.dtype, aBytes);
    const b = fromBytes(task.dtype, bBytes);
    let c = referenceProduct(a, b, task.m, task.k, task.n);
    if (behaviour.lie === "perturb") c[Math.floor(c.length / 2)] += 1;
    if (behaviour.lie === "zeros") c = new Float64Array(c.length);
    if (behaviour.lie === "shape") c = c.subarray(0, Math.max(1, c.length - 1));
    socket.emit("task_result", { task_id: task.task_id, c: toBytes(task.dtype, c), compute_ms: 1 });
  });
  socket.on("result_ack", (ack) => {
    if (ack.accepted) stats.accepted++;
    else {
      stats.refused++;
      stats.reasons.push(ack.reason);
    }
    if (!stats.quarantined) socket.emit("request_task");
  });
  w.stop = () => {
    clearInterval(beat);
    socket.close();
  };
  t?.after(() => w.stop());
  await once(socket, "registration_ack");
  return w;
}

/**
 * A worker that takes a task and leaves, over and over, until `stop()`, which resolves to the
 * number of leases it abandoned. Each round connects to `urls()` (a function: the servers may
 * change as they restart) in turn; a server that is down for a restart is tried again.
 */
export function startQuitter(urls) {
  let quitting = true;
  const rounds = (async () => {
    let left = 0;
    for (let i = 0; quitting; i++) {
      const all = urls();
      const s = connect(all[i % all.length]);
      try {
        await once(s, "connect", 3000);
        s.emit("register_worker", { name: "quitter" });
        await once(s, "registration_ack", 3000);
        s.emit("request_task");
        await once(s, "task_assigned", 3000);
        left++;
      } catch {
        // The server may be down for its restart; try again.
      }
      s.close();
      await new Promise((r) => setTimeout(r, 100));
    }
    return left;
  })();
  return {
    stop: () => {
      quitting = false;
      return rounds;
    },
  };
}
