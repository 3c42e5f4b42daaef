// Fuzzing the Socket.io handlers: thousands of random payloads (wrong types, missing fields,
// negative and huge numbers, binary where JSON is expected and the reverse, unknown and other
// workers' task ids, results for finished jobs), then the server must still serve a correct
// job. Seeded, so a failure can be replayed with FUZZ_SEED.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  api, assertClose, connect, downloadNpy, referenceProduct, once, randomMatrix, registered, rowsOf,
  startServer, startWorker, waitForJob,
} from "./helpers.mjs";

const EVENTS = ["register_worker", "heartbeat", "request_task", "task_result", "task_failed",
  "worker_status", "subscribe_dashboard", "registration_ack", "task_assigned", "", "__proto__"];

function generator(seed) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
  const pick = (xs) => xs[Math.floor(next() * xs.length)];
  const numbers = [0, -1, 1, 2 ** 31, -(2 ** 63), 2 ** 64, 1e308, -1e308, 0.5, Number.MAX_SAFE_INTEGER, 3];
  const value = (depth, ids) => {
    switch (Math.floor(next() * (depth > 2 ? 6 : 9))) {
      case 0: return pick(numbers);
      case 1: return pick(["", "x", "f32", "💥".repeat(50), "1", "NaN", "null", "a".repeat(5000)]);
      case 2: return pick([true, false, null]);
      case 3: return Buffer.alloc(Math.floor(next() * 64), Math.floor(next() * 256));
      case 4: return pick(ids.length ? ids : [1]);
      case 5: return new Uint8Array(Math.floor(next() * 16)).buffer;
      case 6: return Array.from({ length: Math.floor(next() * 4) }, () => value(depth + 1, ids));
      default: {
        const o = {};
        const keys = ["task_id", "c", "compute_ms", "error", "name", "threads", "user_agent",
          "token", "visible", "on_battery", "a", "b", "x"];
        for (let i = Math.floor(next() * 5); i > 0; i--) o[pick(keys)] = value(depth + 1, ids);
        return o;
      }
    }
  };
  return { next, pick, value };
}

test("random payloads at every handler leave the server serving correct jobs", async (t) => {
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 100000);
  t.diagnostic(`FUZZ_SEED=${seed}`);
  const server = await startServer(t, { env: { MAX_EVENTS_PER_SEC: "100000", LEASE_MS: "2000" } });
  const gen = generator(seed);

  // A finished job and live task ids of another worker, to replay.
  const finished = await api(server.url, "/api/jobs", { method: "POST", body: { a: [[1, 2]], b: [[3], [4]] } });
  const helper = await startWorker(t, server.url, { name: "first" });
  await waitForJob(server.url, finished.json.id);
  helper.stop();
  const ids = [...helper.stats.tasks, 0, -5, 2 ** 53];

  const sockets = [];
  for (let i = 0; i < 4; i++) {
    if (i % 2 === 0) sockets.push((await registered(t, server.url, { name: `fuzz-${i}` })).socket);
    else {
      const s = connect(server.url);
      t.after(() => s.close());
      await once(s, "connect");
      sockets.push(s);
    }
  }
  let sent = 0;
  for (let round = 0; round < 3000; round++) {
    const socket = gen.pick(sockets);
    if (!socket.connected) continue;
    const event = gen.next() < 0.9 ? gen.pick(EVENTS) : `random-${round}`;
    const args = Array.from({ length: Math.floor(gen.next() * 3) }, () => gen.value(0, ids));
    socket.emit(event, ...args);
    sent++;
    if (round % 200 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 300));
  t.diagnostic(`sent ${sent} random events`);

  // The server is up and serves a fresh job correctly alongside the fuzzers' leftovers.
  assert.equal((await api(server.url, "/health")).status, 200);
  const [m, k, n] = [17, 9, 13];
  const a = randomMatrix(m, k, "f64", seed);
  const b = randomMatrix(k, n, "f64", seed + 1);
  const job = await api(server.url, "/api/jobs", { method: "POST", body: { a: rowsOf(a, m, k), b: rowsOf(b, k, n), tile: 4 } });
  assert.equal(job.status, 201);
  await startWorker(t, server.url, { name: "honest" });
  await waitForJob(server.url, job.json.id, { ms: 30000 });
  assertClose((await downloadNpy(server.url, job.json.id)).data, referenceProduct(a, b, m, k, n), k);
  const first = await downloadNpy(server.url, finished.json.id);
  assert.deepEqual(Array.from(first.data), [11], "the finished job's result is untouched");
});
