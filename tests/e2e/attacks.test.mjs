// The attacks of docs/security.md ("Attacks and their defences"), each mounted against the
// real server with the official socket.io-client; every test asserts that the defence holds.
// Sections are numbered as in docs/security.md. Bounds on memory or time are loose enough
// that they cannot flake (e.g. the server's RSS read from /proc), never timing assertions.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as h from "./helpers.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- 1. Job killing -------------------------------------------------------------------------



// ---- 2. Task amplification ------------------------------------------------------------------



// ---- 3. Memory amplification in JSON --------------------------------------------------------



// ---- 4. A hostile page enlists its visitors -------------------------------------------------



// ---- 5. Forged addresses --------------------------------------------------------------------



// ---- 6. Re-send amplification ---------------------------------------------------------------



// ---- 7. Lease hoarding ----------------------------------------------------------------------



// ---- 8. Tiles that can never be returned ----------------------------------------------------



// ---- 9. Non-finite bounds -------------------------------------------------------------------

// An f64 job with entries near 1e154: ‖aᵢ‖² overflowed, the acceptance bound became ∞ (or NaN
// for 0·∞) and `diff > bound` was false, so any finite result was accepted. A worker returns
// finite wrong tiles (halved, or all zeros); each must be refused, and the product an honest
// worker then completes must be right.
test("9. finite wrong results for f64 operands near 1e154 are refused", async (t) => {
  const server = await h.startServer(t);
  const [m, k, n] = [6, 40, 5];
  const a = h.randomMatrix(m, k, 91).map((x) => x * 1e154);
  const b = h.randomMatrix(k, n, 92);
  a.fill(0, 0, k); // a zero row: 0·∞ in the old bound
  const form = new FormData();
  form.append("a", new Blob([h.npyEncode("f64", m, k, a)]), "a.npy");
  form.append("b", new Blob([h.npyEncode("f64", k, n, b)]), "b.npy");
  form.append("tile", "3");
  const created = await h.api(server.url, "/api/jobs", { method: "POST", body: form });
  assert.equal(created.status, 201, created.text);

  // Two liars, one wrong finite tile each (a fresh identity per lie: a refused worker's
  // later treatment is the trust policy's business, not this test's).
  const acks = [];
  for (const lie of ["halve", "zeros"]) {
    const { socket: liar } = await h.registered(t, server.url, { name: `liar-${lie}` });
    const assigned = h.once(liar, "task_assigned");
    liar.emit("request_task");
    const task = await assigned;
    assert.equal(task.dtype, "f64");
    const c = h.matmul(h.fromBytes("f64", task.a), h.fromBytes("f64", task.b), task.m, task.k, task.n);
    const wrong = lie === "halve" ? c.map((x) => x / 2) : new Float64Array(c.length);
    assert.ok(wrong.every(Number.isFinite) && wrong.some((x, i) => x !== c[i]));
    const ack = h.once(liar, "result_ack");
    liar.emit("task_result", { task_id: task.task_id, c: h.toBytes("f64", wrong), compute_ms: 1 });
    acks.push(await ack);
    liar.close();
  }
  for (const ack of acks) assert.equal(ack.accepted, false, `a finite wrong tile was accepted: ${JSON.stringify(ack)}`);

  // An honest worker finishes the job; the product is right entry by entry.
  const honest = await h.startWorker(t, server.url, { name: "honest-1e154", inFlight: 2 });
  await h.waitForJob(server.url, created.json.id, { ms: 30000 });
  assert.equal(honest.stats.refused, 0, `honest tiles refused: ${honest.stats.reasons}`);
  const { data } = await h.downloadNpy(server.url, created.json.id);
  const want = h.matmul(a, b, m, k, n);
  for (let i = 0; i < want.length; i++) {
    assert.ok(Number.isFinite(data[i]), `entry ${i} is ${data[i]}`);
    assert.ok(Math.abs(data[i] - want[i]) <= 1e-12 * Math.abs(want[i]) + 1e-300, `entry ${i}: ${data[i]} != ${want[i]}`);
  }
});

// ---- 10. Unbounded metric labels ------------------------------------------------------------



// ---- 12. Stale standing ---------------------------------------------------------------------



// (11, the dashboard handing its token to any server, is a browser test: web/test/e2e/.)
