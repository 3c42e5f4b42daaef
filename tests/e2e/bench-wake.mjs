#!/usr/bin/env node
// How long a worker waiting on one instance waits for a job submitted to another (#18): from
// the submission's reply to the task's arrival, over `ROUNDS` jobs. Instances sharing
// PostgreSQL tell each other of new work (LISTEN/NOTIFY); without that, the waiting instance
// finds the job at its next sweep, up to a second later. Prints figures; asserts no timing.
//   BRAIN_SERVER_BIN=… node bench-wake.mjs
import { join } from "node:path";
import { once, startServer, startWorker, submitRandom, tempDir } from "./helpers.mjs";
import { createDatabase, startPostgres } from "../support/postgres.mjs";

const ROUNDS = Number(process.env.ROUNDS ?? 10);
const t = { after: (fn) => cleanups.push(fn) };
const cleanups = [];
try {
  const pg = await startPostgres({ t });
  const dir = tempDir(t);
  const env = { DATABASE_URL: await createDatabase(pg) };
  // SHARED_DATA_DIR=1: one DATA_DIR for both, for a server older than the chunk store.
  const jobs = (name) => join(dir, process.env.SHARED_DATA_DIR ? "jobs" : `${name}-jobs`);
  const start = (name) => startServer(t, { dbPath: join(dir, `${name}.db`), env: { ...env, DATA_DIR: jobs(name) } });
  const [a, b] = [await start("a"), await start("b")];
  const worker = await startWorker(t, b.url, { name: "waiting", inFlight: 1 });
  const waits = [];
  for (let i = 0; i < ROUNDS; i++) {
    const arrived = once(worker.socket, "task_assigned", 10000);
    const submitted = Date.now();
    await submitRandom(a.url, 2, 2, 2, 2, 100 + i);
    await arrived;
    waits.push(Date.now() - submitted);
    await new Promise((r) => setTimeout(r, 300 + Math.random() * 400));
  }
  waits.sort((x, y) => x - y);
  const q = (p) => waits[Math.min(waits.length - 1, Math.floor(p * waits.length))];
  console.log(`a job submitted to one instance reaches a worker waiting on another: median ${q(0.5)} ms, max ${waits.at(-1)} ms (${ROUNDS} jobs)`);
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
