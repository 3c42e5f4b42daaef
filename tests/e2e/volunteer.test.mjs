// The command-line volunteer README.md offers (tools/volunteer/worker.mjs) through the front
// door: spawned as a user runs it, against the real server, with the product it computed
// checked against the reference. Its npm dependencies come from tools/volunteer's own
// package (scripts/test-e2e.sh installs them).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { api, assertClose, downloadNpy, startServer, submitRandom } from "./helpers.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const VOLUNTEER = resolve(here, "../../tools/volunteer/worker.mjs");

/** Runs the volunteer with `args` until it exits (killed after `ms`); resolves with its code and output. */
function volunteer(args, ms = 60000) {
  return new Promise((res) => {
    const env = { ...process.env };
    delete env.BRAIN_SERVER;
    const p = spawn(process.execPath, [VOLUNTEER, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), ms);
    p.on("exit", (code, signal) => {
      clearTimeout(timer);
      res({ code, signal, out, err });
    });
  });
}

test("the command-line volunteer computes a job with two workers and exits when idle", async (t) => {
  const server = await startServer(t);
  const job = await submitRandom(server.url, 24, 9, 20, 8, 13); // 3×3 tiles

  const run = await volunteer(["--server", server.url, "--workers", "2", "--exit-when-idle"]);
  assert.equal(run.code, 0, `exit ${run.code ?? run.signal}\n${run.out}\n${run.err}`);
  assert.match(run.out, /^2 worker\(s\) connected to http:\/\/127\.0\.0\.1:\d+; Ctrl-C to stop$/m);
  assert.match(run.out, /^tiles accepted: 9$/m);

  const done = (await api(server.url, `/api/jobs/${job.id}`)).json;
  assert.equal(done.status, "done");
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
});

test("the command-line volunteer refuses a bad worker count or option with status 2", async () => {
  for (const n of ["0", "-1", "two", "1.5"]) {
    const run = await volunteer(["--server", "http://127.0.0.1:9", `--workers=${n}`]);
    assert.equal(run.code, 2, `--workers ${n}: exit ${run.code}\n${run.err}`);
    assert.match(run.err, /--workers must be a positive integer/);
  }
  const unknown = await volunteer(["--threads", "4"]);
  assert.equal(unknown.code, 2, unknown.err);
  assert.match(unknown.err, /Unknown option '--threads'[\s\S]*usage: node tools\/volunteer\/worker\.mjs/);
});
