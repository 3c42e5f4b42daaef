// The worker protocol, event by event, with the official socket.io-client.

import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { api, connect, once, registered, startServer, toBytes, waitForJob } from "./helpers.mjs";

test("register_worker answers registration_ack, as an event and through the callback", async (t) => {
  const server = await startServer(t, { env: { LEASE_MS: "6000" } });
  const socket = connect(server.url);
  t.after(() => socket.close());
  const event = once(socket, "registration_ack");
  const viaCallback = await socket.timeout(5000).emitWithAck("register_worker", { name: "cb", threads: 4 });
  const ack = await event;
  assert.deepEqual(viaCallback, ack);
  assert.match(ack.worker_id, /^[0-9a-f-]{36}$/);
  assert.equal(ack.lease_ms, 6000);
  assert.ok(ack.heartbeat_interval_ms > 0 && ack.heartbeat_interval_ms < 6000);

  const workers = (await api(server.url, "/api/workers")).json;
  assert.equal(workers.length, 1);
  assert.equal(workers[0].worker_id, ack.worker_id);
  assert.equal(workers[0].threads, 4);

  const before = Date.now();
  const hb = once(socket, "heartbeat_ack");
  socket.emit("heartbeat");
  const { server_time } = await hb;
  assert.ok(Math.abs(server_time - before) < 5000, `server_time ${server_time} is milliseconds since the epoch`);
});

test("a registration without any payload is accepted", async (t) => {
  const server = await startServer(t);
  const socket = connect(server.url);
  t.after(() => socket.close());
  const ack = once(socket, "registration_ack");
  socket.emit("register_worker");
  assert.ok((await ack).worker_id);
});

test("events before registering and malformed payloads get protocol_error; the socket goes on", async (t) => {
  const server = await startServer(t);
  const socket = connect(server.url);
  t.after(() => socket.close());
  await once(socket, "connect");
  for (const event of ["heartbeat", "request_task", "task_result", "task_failed"]) {
    const err = once(socket, "protocol_error");
    socket.emit(event, { task_id: 1 });
    assert.equal((await err).code, "not_registered", event);
  }
  const ack = once(socket, "registration_ack");
  socket.emit("register_worker", { name: "x" });
  await ack;
  const cases = [
    ["task_result", { task_id: "one", c: Buffer.alloc(4) }],
    ["task_result", { c: Buffer.alloc(4) }],
    ["task_result", { task_id: 1, c: [1, 2, 3] }],
    ["task_failed", "just a string"],
    ["register_worker", { threads: "many" }],
    ["worker_status", { visible: "yes" }],
  ];
  for (const [event, payload] of cases) {
    const err = once(socket, "protocol_error");
    socket.emit(event, payload);
    const { code, message } = await err;
    assert.equal(code, "bad_payload", `${event} ${JSON.stringify(payload)}`);
    assert.match(message, new RegExp(event));
  }
  const unknown = once(socket, "protocol_error");
  socket.emit("launch_missiles", {});
  assert.equal((await unknown).code, "unknown_event");
  const hb = once(socket, "heartbeat_ack");
  socket.emit("heartbeat");
  await hb;
  assert.ok(socket.connected);
});

test("task_assigned carries binary panels; wrong, foreign and repeated results are refused", async (t) => {
  const server = await startServer(t);
  const created = await api(server.url, "/api/jobs", {
    method: "POST",
    body: { a: [[1, 2, 3], [4, 5, 6]], b: [[1, 0], [0, 1], [1, 1]], tile: 1 },
  });
  const { socket: honest } = await registered(t, server.url, { name: "honest" });
  const { socket: other } = await registered(t, server.url, { name: "other" });

  const assigned = once(honest, "task_assigned");
  honest.emit("request_task");
  const task = await assigned;
  assert.equal(task.job_id, created.json.id);
  assert.deepEqual([task.dtype, task.m, task.k, task.n], ["f32", 1, 3, 1]);
  assert.ok(Buffer.isBuffer(task.a) && task.a.length === 12, "a is a binary attachment of 1×3 f32");
  assert.ok(Buffer.isBuffer(task.b) && task.b.length === 12, "b is a binary attachment of 3×1 f32");

  const reply = async (socket, payload) => {
    const ack = once(socket, "result_ack");
    socket.emit("task_result", payload);
    return ack;
  };
  const foreign = await reply(other, { task_id: task.task_id, c: toBytes("f32", [4]) });
  assert.equal(foreign.accepted, false);
  assert.match(foreign.reason, /not leased to this worker/);
  const unknown = await reply(honest, { task_id: 999999, c: toBytes("f32", [4]) });
  assert.equal(unknown.accepted, false);
  assert.match(unknown.reason, /unknown task/);

  const a = new Float32Array(task.a.buffer.slice(task.a.byteOffset, task.a.byteOffset + 12));
  const b = new Float32Array(task.b.buffer.slice(task.b.byteOffset, task.b.byteOffset + 12));
  const c = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const good = await reply(honest, { task_id: task.task_id, c: toBytes("f32", [c]), compute_ms: 0.5 });
  assert.deepEqual(good, { task_id: task.task_id, accepted: true });
  const again = await reply(honest, { task_id: task.task_id, c: toBytes("f32", [c]) });
  assert.equal(again.accepted, false, "the first accepted result wins");
  assert.match(again.reason, /already completed/);

  // A result of the wrong size is refused, and that task never goes back to that worker.
  const second = once(other, "task_assigned");
  other.emit("request_task");
  const wrongTask = await second;
  const wrongSize = await reply(other, { task_id: wrongTask.task_id, c: toBytes("f32", [1, 2]) });
  assert.equal(wrongSize.accepted, false);
  assert.match(wrongSize.reason, /bytes/);
  const seen = [];
  for (let i = 0; i < 2; i++) {
    const next = once(other, "task_assigned");
    other.emit("request_task");
    seen.push((await next).task_id);
  }
  assert.ok(!seen.includes(wrongTask.task_id), `task ${wrongTask.task_id} not given back: ${seen}`);
  const job = (await api(server.url, `/api/jobs/${created.json.id}`)).json;
  assert.equal(job.tasks_done, 1);
  assert.equal(job.status, "running");
  const workers = (await api(server.url, "/api/workers")).json;
  const rep = Object.fromEntries(workers.map((w) => [w.name, w.reputation]));
  assert.equal(rep.honest.verified, 1);
  assert.equal(rep.other.refused, 1);
  assert.equal(rep.other.quarantined, false);
});

test("a result that does not say how long it took is stored, and so are the ones after it that do", async (t) => {
  // One database connection: on PostgreSQL every result then goes through the statement the
  // first one prepared, whose time parameter must keep its type when the first had none.
  const server = await startServer(t, { env: { DATABASE_MAX_CONNECTIONS: "1" } });
  const created = await api(server.url, "/api/jobs", {
    method: "POST",
    body: { a: [[1, 2, 3], [4, 5, 6], [7, 8, 9]], b: [[1], [0], [1]], tile: 1 },
  });
  const { socket } = await registered(t, server.url, { name: "untimed" });
  for (const computeMs of [undefined, undefined, 2.5]) {
    const assigned = once(socket, "task_assigned");
    socket.emit("request_task");
    const task = await assigned;
    const a = new Float32Array(task.a.buffer.slice(task.a.byteOffset, task.a.byteOffset + 12));
    const b = new Float32Array(task.b.buffer.slice(task.b.byteOffset, task.b.byteOffset + 12));
    const ack = once(socket, "result_ack");
    socket.emit("task_result", { task_id: task.task_id, c: toBytes("f32", [a[0] * b[0] + a[1] * b[1] + a[2] * b[2]]), compute_ms: computeMs });
    assert.deepEqual(await ack, { task_id: task.task_id, accepted: true }, `the result with compute_ms ${computeMs}`);
  }
  const job = await waitForJob(server.url, created.json.id);
  assert.equal(job.tasks_done, 3);
});

test("a request waits until a job arrives, then is answered without polling", async (t) => {
  const server = await startServer(t);
  const { socket } = await registered(t, server.url);
  const assigned = once(socket, "task_assigned", 10000);
  socket.emit("request_task");
  await new Promise((r) => setTimeout(r, 300));
  const created = await api(server.url, "/api/jobs", { method: "POST", body: { a: [[2]], b: [[3]] } });
  const task = await assigned;
  assert.equal(task.job_id, created.json.id);
  const ack = once(socket, "result_ack");
  socket.emit("task_result", { task_id: task.task_id, c: toBytes("f32", [6]) });
  assert.equal((await ack).accepted, true);
  await waitForJob(server.url, created.json.id);
});

test("waiting requests are served in turns: each worker's first task before anyone's second", async (t) => {
  const server = await startServer(t);
  const { socket: eager } = await registered(t, server.url, { name: "eager" });
  const { socket: late } = await registered(t, server.url, { name: "late" });
  const got = { eager: [], late: [] };
  eager.on("task_assigned", (task) => got.eager.push(task.task_id));
  late.on("task_assigned", (task) => got.late.push(task.task_id));
  // The eager worker asks for two tasks before the late one asks for its one; the job that
  // arrives has two tasks. First come, first served would give both to the eager worker.
  eager.emit("request_task");
  eager.emit("request_task");
  await new Promise((r) => setTimeout(r, 200));
  late.emit("request_task");
  await new Promise((r) => setTimeout(r, 200));
  await api(server.url, "/api/jobs", { method: "POST", body: { a: [[1], [2]], b: [[3]], tile: 1 } });
  for (let i = 0; i < 50 && got.eager.length + got.late.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(got.eager.length, 1, `eager got ${got.eager}`);
  assert.equal(got.late.length, 1, `late got ${got.late}`);
});

test("dashboards receive job and tile updates", async (t) => {
  const server = await startServer(t);
  const dash = connect(server.url);
  t.after(() => dash.close());
  await once(dash, "connect");
  dash.emit("subscribe_dashboard");
  await new Promise((r) => setTimeout(r, 100));
  const jobUpdate = once(dash, "job_update", 5000);
  const created = await api(server.url, "/api/jobs", { method: "POST", body: { a: [[2]], b: [[3]] } });
  assert.equal((await jobUpdate).id, created.json.id);
  const tiles = (await api(server.url, `/api/jobs/${created.json.id}/tiles`)).json;
  assert.deepEqual(tiles, { tile_rows: 1, tile_cols: 1, k_split: 1, tiles: [{ task_id: tiles.tiles[0].task_id, row: 0, col: 0, state: "queued" }] });
  const { socket } = await registered(t, server.url);
  const tileUpdate = once(dash, "tile_update", 5000);
  socket.emit("request_task");
  const update = await tileUpdate;
  assert.deepEqual([update.job_id, update.row, update.col, update.state], [created.json.id, 0, 0, "leased"]);
});

/**
 * Opens a raw Engine.IO websocket, sends `packets` the moment the server says hello (without
 * waiting for the Socket.io connect answer, as a client on a dropping network may), and
 * drops the TCP connection at once. Resolves when it is closed.
 */
function hitAndRun(url, packets) {
  return new Promise((res) => {
    const ws = new WebSocket(`${url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
    ws.on("message", (m) => {
      if (!String(m).startsWith("0")) return;
      for (const p of packets) ws.send(p);
      ws.terminate();
    });
    ws.on("close", res);
    ws.on("error", res);
  });
}

async function hitAndRunMany(url, count, packets) {
  for (let i = 0; i < count; i += 20) {
    await Promise.all(Array.from({ length: 20 }, () => hitAndRun(url, packets)));
  }
}

test("clients that leave while connecting give their place back: the address is not locked out", async (t) => {
  const server = await startServer(t, { env: { MAX_CONNECTIONS_PER_IP: "8" } });
  await hitAndRunMany(server.url, 200, ["40"]);
  // Every place is free again: exactly 8 connect, and the 9th is still refused.
  const sockets = Array.from({ length: 9 }, () => connect(server.url));
  t.after(() => sockets.forEach((s) => s.close()));
  const outcomes = await Promise.all(
    sockets.map(
      (s) =>
        new Promise((res) => {
          s.once("connect", () => res("connected"));
          s.once("connect_error", (e) => res(`refused: ${e.message}`));
        }),
    ),
  );
  const connected = outcomes.filter((o) => o === "connected").length;
  assert.equal(connected, 8, outcomes.join("; "));
  assert.match(outcomes.find((o) => o !== "connected"), /more than 8 connections/);
});

test("a client that registers and leaves at once is not left listed as a worker", async (t) => {
  const server = await startServer(t);
  await hitAndRunMany(server.url, 400, ["40", '42["register_worker",{"name":"gone"}]', '42["request_task"]']);
  let listed;
  for (const until = Date.now() + 5000; Date.now() < until; ) {
    listed = (await api(server.url, "/api/workers")).json.length;
    if (listed === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(listed, 0, "workers listed after every client left");
  const status = (await api(server.url, "/api/status")).json;
  assert.equal(status.workers_online, 0);
  // The server is still whole: a worker that stays gets registered and served.
  const { ack } = await registered(t, server.url);
  assert.ok(ack.worker_id);
});
