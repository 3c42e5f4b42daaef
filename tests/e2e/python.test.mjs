// docs/python.md, run as written: its Python block submits two NumPy operands to a real server
// with two volunteers and compares the product with NumPy's own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer, startWorker, tempDir } from "./helpers.mjs";

const doc = readFileSync(resolve(dirname(fileURLToPath(import.meta.url)), "../../docs/python.md"), "utf8");

test("the Python example in docs/python.md computes the product NumPy does", async (t) => {
  const code = doc.match(/```python\n([\s\S]*?)```/)?.[1];
  assert.ok(code, "docs/python.md has a python block");
  const script = join(tempDir(t), "example.py");
  writeFileSync(script, code);
  const server = await startServer(t);
  await startWorker(t, server.url, { name: "py1" });
  await startWorker(t, server.url, { name: "py2" });
  // Asynchronously: a blocking spawn would stall the event loop the workers need.
  const run = await new Promise((res) => {
    const p = spawn("python3", [script], { env: { ...process.env, BRAIN_SERVER: server.url, API_TOKEN: "" } });
    let out = "", err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("exit", (code) => res({ code, out, err }));
  });
  assert.equal(run.code, 0, `python exited with ${run.code}:\n${run.err}`);
  assert.match(run.out, /shape \(300, 100\) dtype float32/);
  const error = Number(run.out.match(/max abs error against numpy: (\S+)/)[1]);
  assert.ok(error < 1e-3, `max error ${error}`);
});

