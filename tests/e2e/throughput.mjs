#!/usr/bin/env node
// Scheduler throughput: one job of ~20,000 tiny tiles (1×1 tiles, k = 1) served by 100
// Socket.io workers that answer instantly, against the release server on loopback. Prints
// verified, committed completions per second and the server's CPU time per task. Bounded:
// the job must finish within five minutes.
//   node tests/e2e/throughput.mjs [--workers 100] [--side 142]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { api, randomMatrix, rowsOf, startServer, startWorker, waitForJob } from "./helpers.mjs";

const { values } = parseArgs({
  options: { workers: { type: "string", default: "100" }, side: { type: "string", default: "142" } },
});
const [W, N] = [Number(values.workers), Number(values.side)];
const server = await startServer(null, {
  env: { MAX_EVENTS_PER_SEC: "100000", MAX_CONNECTIONS_PER_IP: "100000", RUST_LOG: "warn" },
});
const cpu = () => {
  const f = readFileSync(`/proc/${server.proc.pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in seconds
};
const workers = [];
for (let i = 0; i < W; i++) workers.push(await startWorker(null, server.url, { name: `w${i}`, inFlight: 4 }));
const a = randomMatrix(N, 1, 1);
const b = randomMatrix(1, N, 2);
const cpu0 = cpu();
const t0 = performance.now();
const res = await api(server.url, "/api/jobs", { method: "POST", body: { a: rowsOf(a, N, 1), b: rowsOf(b, 1, N), tile: 1 } });
const job = await waitForJob(server.url, res.json.id, { ms: 300000 });
const secs = (performance.now() - t0) / 1000;
const serverCpu = cpu() - cpu0;
// Every tile checked against the product computed here.
const got = (await api(server.url, `/api/jobs/${job.id}/result?format=json`)).json.c;
for (let i = 0; i < N; i++)
  for (let j = 0; j < N; j++)
    if (Math.abs(got[i][j] - Math.fround(a[i]) * Math.fround(b[j])) > 1e-6) throw new Error(`C[${i}][${j}] is wrong`);
console.log(`scheduler throughput: ${job.tasks_total} tasks, ${W} workers, ${secs.toFixed(2)} s`);
console.log(`  ${(job.tasks_total / secs).toFixed(0)} verified, committed completions/s (target 5,000; Dask ~1,000/s at ~1 ms per task; one BOINC server ~100/s)`);
console.log(`  server CPU ${(serverCpu * 1e6 / job.tasks_total).toFixed(0)} µs per task (the load generator shares this 2-core machine)`);
for (const w of workers) w.stop();
await server.kill("SIGTERM");
process.exit(0);
