#!/usr/bin/env node
// A command-line volunteer: connects N Socket.io workers to a server and computes the tiles
// it is given with a plain triple loop (no wasm kernel, so far slower than the page). For
// trying the grid from a terminal (see README.md).
//
//   (cd tools/volunteer && npm ci)
//   node tools/volunteer/worker.mjs [--server http://localhost:3000] [--workers 2] [--exit-when-idle]

import { parseArgs } from "node:util";
import { io } from "socket.io-client";
import { referenceProduct } from "../../tests/support/matrix.mjs";

/** Tasks each worker keeps requested: one computing while the next is on its way. */
const IN_FLIGHT = 2;
/** How long the first registration may take before the server counts as unreachable. */
const REGISTER_MS = 10000;
/** With --exit-when-idle: how long no tile may be accepted, after the first, before exiting. */
const IDLE_MS = 2000;

const ARRAY = { f32: Float32Array, f64: Float64Array };

/** The numbers in a binary attachment (a Buffer in Node), copied to an aligned buffer. */
function numbers(dtype, bytes) {
  const u8 = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return new ARRAY[dtype](u8.slice().buffer);
}

/**
 * One worker: registers (again after a reconnection, with the token the server gave it, as
 * the page does), heartbeats at the interval the server asks for, keeps IN_FLIGHT tasks
 * requested and answers each one. Resolves once registered; rejects if that takes longer
 * than REGISTER_MS.
 */
function volunteer(url, name) {
  const socket = io(url, {
    transports: ["websocket"],
    forceNew: true,
    reconnection: true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
  });
  const w = { socket, accepted: 0, token: undefined, quarantined: false };
  let beat;
  let lastError = "no answer";
  socket.on("connect", () => socket.emit("register_worker", { name, threads: 1, token: w.token }));
  socket.on("connect_error", (e) => (lastError = e.message));
  socket.on("registration_ack", (ack) => {
    w.token = ack.token;
    clearInterval(beat);
    beat = setInterval(() => socket.emit("heartbeat"), ack.heartbeat_interval_ms);
    w.quarantined = Boolean(ack.quarantined);
    if (w.quarantined) console.error(`${name}: quarantined: ${ack.quarantined}`);
    else for (let i = 0; i < IN_FLIGHT; i++) socket.emit("request_task");
  });
  socket.on("disconnect", () => clearInterval(beat));
  socket.on("quarantined", ({ reason }) => {
    w.quarantined = true;
    console.error(`${name}: quarantined: ${reason}`);
  });
  socket.on("task_assigned", (task) => {
    // This worker announces no panel cache, so every task carries both of its panels.
    if (!task.a || !task.b) return socket.emit("panel_missing", { task_id: task.task_id });
    const t0 = performance.now();
    const c = referenceProduct(numbers(task.dtype, task.a), numbers(task.dtype, task.b), task.m, task.k, task.n);
    const bytes = Buffer.from(new ARRAY[task.dtype](c).buffer);
    socket.emit("task_result", { task_id: task.task_id, c: bytes, compute_ms: performance.now() - t0 });
  });
  socket.on("result_ack", (ack) => {
    if (ack.accepted) w.accepted++;
    else console.error(`${name}: result for task ${ack.task_id} refused: ${ack.reason}`);
    if (!w.quarantined) socket.emit("request_task");
  });
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`not registered within ${REGISTER_MS} ms (${lastError})`)), REGISTER_MS);
    socket.once("registration_ack", () => {
      clearTimeout(timer);
      res(w);
    });
  });
}

const USAGE = "usage: node tools/volunteer/worker.mjs [--server URL] [--workers N] [--exit-when-idle]";
let values;
try {
  ({ values } = parseArgs({
    options: {
      server: { type: "string", default: process.env.BRAIN_SERVER ?? "http://localhost:3000" },
      workers: { type: "string", default: "2" },
      "exit-when-idle": { type: "boolean", default: false },
    },
  }));
} catch (e) {
  console.error(`${e.message}\n${USAGE}`);
  process.exit(2);
}
const count = Number(values.workers);
if (!Number.isInteger(count) || count < 1) {
  console.error("--workers must be a positive integer");
  process.exit(2);
}
const workers = [];
for (let i = 0; i < count; i++) {
  try {
    workers.push(await volunteer(values.server, `cli-${i + 1}`));
  } catch (e) {
    console.error(`cannot connect to ${values.server}: ${e.message}`);
    process.exit(1);
  }
}
console.log(`${count} worker(s) connected to ${values.server}; Ctrl-C to stop`);
let last = -1;
let idleSince = Date.now();
setInterval(() => {
  const done = workers.reduce((s, w) => s + w.accepted, 0);
  if (done !== last) {
    console.log(`tiles accepted: ${done}`);
    last = done;
    idleSince = Date.now();
  } else if (values["exit-when-idle"] && done > 0 && Date.now() - idleSince > IDLE_MS) {
    for (const w of workers) w.socket.close();
    process.exit(0);
  }
}, 500);
