#!/usr/bin/env node
// What keeping jobs' matrices in PostgreSQL costs (#18, docs/storage.md), beside SQLite's
// folder store, for one n×n f32 job (default 4096: two 64 MiB inputs):
//
//   node bench-chunks.mjs [--n 4096] [--durable]
//
// - submission through the HTTP API (curl -F): on PostgreSQL the inputs are also copied into
//   job_chunks before the 201; the server's peak RSS meanwhile;
// - the copy of the inputs into a second instance's empty DATA_DIR, started by its first task
//   (the time the server logs);
// - the download of an n×n result (an n×1 · 1×n job, cheap to compute), whole, through curl.
// The private PostgreSQL runs with the tests' settings (no fsync) unless --durable.
// Uses BRAIN_SERVER_BIN (default target/release/brain-server).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { spawnServer } from "../support/server.mjs";
import { createDatabase, startPostgres } from "../support/postgres.mjs";
import { startWorker } from "./helpers.mjs";
import { MiB, downloadFile, rssSampler, submitFiles, writeNpyF32 } from "./bigjob.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const { values: opts } = parseArgs({
  options: { n: { type: "string", default: "4096" }, durable: { type: "boolean", default: false } },
});
const n = Number(opts.n);
const bin = process.env.BRAIN_SERVER_BIN ?? resolve(here, "../../target/release/brain-server");
const dir = mkdtempSync(join(tmpdir(), "brain-bench-chunks-"));
const noTest = { after() {}, diagnostic() {} };
const durable = opts.durable ? { fsync: "on", synchronous_commit: "on", full_page_writes: "on" } : {};
const pg = await startPostgres({ settings: durable });
const stops = [];
try {
  const a = join(dir, "a.npy");
  const b = join(dir, "b.npy");
  writeNpyF32(a, n, n, 1);
  writeNpyF32(b, n, n, 2);
  const a1 = join(dir, "a1.npy");
  const b1 = join(dir, "b1.npy");
  writeNpyF32(a1, n, 1, 3);
  writeNpyF32(b1, 1, n, 4);
  for (const engine of ["sqlite", "postgres"]) {
    const url = engine === "postgres" ? await createDatabase(pg) : undefined;
    const start = async (name) => {
      const env = { DATA_DIR: join(dir, engine, name), RUST_LOG: "info", ...(url ? { DATABASE_URL: url } : {}) };
      const server = await spawnServer(bin, { dbPath: join(dir, engine, `${name}.db`), env, webDir: join(dir, "no-web") });
      stops.push(() => server.kill());
      return server;
    };
    const one = await start("one");
    const rss = rssSampler(one.proc.pid);
    rss.phase("submit");
    const submitted = await submitFiles(one.url, a, b, { name: "bench" });
    rss.phase("after");
    if (submitted.status !== 201) throw new Error(`submit: ${submitted.status} ${submitted.text}`);
    const inputMb = (2 * n * n * 4) / MiB;
    console.log(`${engine}: submission of ${n}² f32 (${inputMb} MiB of input): ${submitted.seconds.toFixed(2)} s, ` +
      `${(inputMb / submitted.seconds).toFixed(0)} MiB/s; server peak RSS ${(rss.peak("submit") / MiB).toFixed(0)} MB`);
    rss.stop();
    if (engine === "postgres") {
      const two = await start("two");
      const worker = await startWorker(noTest, two.url, { inFlight: 1, behaviour: { holdAll: true } });
      const deadline = Date.now() + 300000;
      const log = () => two.log().replace(/\x1b\[[0-9;]*m/g, "");
      while (!/copied a job's input.*input="?b/.test(log()) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      const copies = [...log().matchAll(/copied a job's input.*?input="?(\w)"?.*?bytes=(\d+).*?ms=(\d+)/g)];
      for (const [, input, bytes, ms] of copies)
        console.log(`${engine}: copy of ${input}.npy (${(bytes / MiB).toFixed(0)} MiB) into an empty DATA_DIR: ${ms} ms, ${(bytes / MiB / (ms / 1000)).toFixed(0)} MiB/s`);
      worker.socket.close();
    }
    const small = await submitFiles(one.url, a1, b1, { name: "result" });
    const worker = await startWorker(noTest, one.url, { inFlight: 4 });
    for (const end = Date.now() + 600000; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
      const job = await (await fetch(`${one.url}/api/jobs/${small.json.id}`)).json();
      if (job.status === "done") break;
    }
    worker.socket.close();
    const got = await downloadFile(one.url, small.json.id, join(dir, `${engine}-c.npy`));
    console.log(`${engine}: download of the ${n}² f32 result (${(got.bytes / MiB).toFixed(0)} MiB): ${got.seconds.toFixed(2)} s, ` +
      `${(got.bytes / MiB / got.seconds).toFixed(0)} MiB/s`);
  }
} finally {
  for (const stop of stops) await stop();
  await pg.stop();
  rmSync(dir, { recursive: true, force: true });
}
