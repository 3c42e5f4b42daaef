// Workers on a mobile link (tests/support/shaper.mjs: 10 Mbit/s down, 2 Mbit/s up, 80 ms
// round trip) whose connections are reset every second or so: the job still finishes, with
// the exact product, on what the workers compute between resets.

import { test } from "node:test";
import assert from "node:assert/strict";
import { startShaper } from "../support/shaper.mjs";
import { assertClose, downloadNpy, startServer, startWorker, submitRandom, waitForJob } from "./helpers.mjs";

test("two workers behind the mobile profile, reset about every second, finish a job exactly", async (t) => {
  const server = await startServer(t);
  // 16 tiles whose panels (128 KiB a tile) take at least 0.8 s to cross the two 10 Mbit/s links.
  const job = await submitRandom(server.url, 256, 256, 256, 64, 21);
  // Seed 299 resets the first two connections 0.50 s and 0.69 s after they open: after their
  // worker registered (three round trips, 0.25 s) and before the panels can have crossed, so
  // each worker is reset mid-job on any machine. Their reconnections draw 1.8 s and 2.1 s,
  // later ones a mean of 1 s.
  const shaper = await startShaper({ t, upstream: server.url, profile: "mobile", resetEveryS: 1, seed: 299, maxSeconds: 120 });

  // Together, so that their first connections are the shaper's first two.
  const workers = await Promise.all(
    ["phone-1", "phone-2"].map((name) => startWorker(t, shaper.url, { name, reconnection: true })),
  );
  await waitForJob(server.url, job.id, { ms: 45000 });

  for (const w of workers) {
    const ended = w.socket.history.events.filter((e) => /^(disconnect|connect_error)/.test(e));
    assert.ok(ended.length >= 1, `${w.socket.history.events.join(", ")}: never reset`);
  }
  assertClose((await downloadNpy(server.url, job.id)).data, job.want, job.k);
  const summary = await shaper.stop();
  t.diagnostic(`shaper: ${JSON.stringify(summary)}`);
  assert.ok(summary.resets >= 2, `${summary.resets} resets`);
  assert.ok(summary.bytes_down >= 16 * 128 * 1024, `${summary.bytes_down} bytes down: the panels went through the shaper`);
});
