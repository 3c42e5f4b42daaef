// The load harness itself (load.mjs, `make bench-grid`), run small: all four runs, `none` and
// `wasm` compute, and the scale-out runs on PostgreSQL and Redis, against the real server. The harness checks every product it gets against
// one computed independently, and exits non-zero on any wrong tile or stalled job; this test
// asserts that it finishes and prints each figure. Timings are printed, never asserted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ON_POSTGRES } from "./helpers.mjs";

const here = dirname(fileURLToPath(import.meta.url));

function harness(args) {
  return new Promise((res) => {
    const p = spawn(process.execPath, [resolve(here, "load.mjs"), ...args], { env: process.env });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("exit", (code) => res({ code, out, err }));
  });
}

test("load harness --quick: all four runs finish with checked products", { timeout: 180000 }, async () => {
  const { code, out, err } = await harness(["all", "--quick"]);
  assert.equal(code, 0, `load.mjs exited with ${code}\n${out}\n${err}`);
  assert.match(out, /1\. scheduler throughput \(none compute\): 900 tasks .* product checked/);
  assert.match(out, /verified, committed completions\/s/);
  assert.match(out, /2\. connections: 200 registered workers/);
  assert.match(out, /the server counted 200 online before and after the waves/);
  assert.match(out, /3\. end-to-end efficiency \(wasm compute\): .* product checked/);
  assert.match(out, /4\. bytes on the wire: .* products checked/);
  const fewer = Number(out.match(/([\d.]+) % fewer input bytes than naive/)[1]);
  assert.ok(fewer >= 30, `panel caches saved only ${fewer} %`);
});

test("load harness: the throughput run also works with wasm compute", { timeout: 120000 }, async () => {
  const { code, out, err } = await harness(["throughput", "--quick", "--compute", "wasm"]);
  assert.equal(code, 0, `load.mjs exited with ${code}\n${out}\n${err}`);
  assert.match(out, /scheduler throughput \(wasm compute\): 900 tasks .* product checked/);
});

// The scale-out runs start their own PostgreSQL and Redis whatever the suite's engine: the
// SQLite pass only (as cluster.test.mjs).
test("load harness scaleout --quick: SQLite, PostgreSQL with one instance and with two, connections over two instances", { skip: ON_POSTGRES && "runs in the SQLite pass", timeout: 180000 }, async () => {
  const { code, out, err } = await harness(["scaleout", "--quick"]);
  assert.equal(code, 0, `load.mjs exited with ${code}\n${out}\n${err}`);
  assert.match(out, /1\. scheduler throughput on SQLite and PostgreSQL \(none compute\): 900 tasks .* every product checked/);
  for (const way of ["SQLite", "PostgreSQL, 1 instance", "PostgreSQL, 2 instances"])
    assert.match(out, new RegExp(`${way}: +[\\d,]+ verified, committed completions/s`));
  // Every task's result was stored by one instance or the other (their own counters).
  const stored = out.match(/results stored by each instance ([\d,]+) \+ ([\d,]+)/).slice(1).map((x) => Number(x.replace(/,/g, "")));
  assert.ok(stored[0] + stored[1] >= 900, `results stored by the instances: ${stored}`);
  assert.match(out, /PostgreSQL with one instance \/ SQLite: \d+ %/);
  assert.match(out, /2\. connections over two instances on one PostgreSQL and one Redis: 200 registered workers \(100 on each\)/);
  assert.match(out, /each instance counted 200 online \(the whole grid\) before and after the waves/);
  assert.match(out, /instance a RSS .* heartbeat p99/);
  assert.match(out, /instance b RSS .* heartbeat p99/);
});
