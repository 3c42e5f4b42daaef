// The volunteer page on a phone's link (#14): its Socket.io connection goes through
// brain-shaper with the mobile profile (10 Mbit/s down, 2 Mbit/s up, 80 ms round trip) and is
// reset soon after it opens. The page comes back by itself, contributes verified tiles, and
// what it shows (tiles this visit, its credit) is what the server counted.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { startShaper } from "../../../tests/support/shaper.mjs";
import { startServer, launchBrowser, waitFor, getJson, randomMatrix, referenceProduct, tempDir, cleanup, OUTPUT } from "./helpers.mjs";
import { decodeNpy } from "../../src/common/npy.js";
import { formatCredit } from "../../src/common/credit.js";

// Whatever happens, this process ends: a hung browser must not hang CI.
setTimeout(() => {
  console.error("shaped browser test: global time limit reached");
  process.exit(1);
}, 3 * 60_000).unref();

test("the page behind the mobile profile survives a reset and shows what the server counted", { timeout: 150_000 }, async (t) => {
  const dir = tempDir();
  const server = await startServer({ dbPath: join(dir, "brain.db") });
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close().catch(() => {});
    await server.kill();
    cleanup(dir);
  });
  // Seed 299 resets the shaper's first connection 0.5 s after it opens (tests/e2e/shaping.test.mjs):
  // the page's Socket.io connection, the first thing it sends the shaper once started, after
  // it registered (three round trips) and while the panels are on their way. Later
  // connections are reset about every 3 s.
  const shaper = await startShaper({ t, upstream: server.url, profile: "mobile", resetEveryS: 3, seed: 299, maxSeconds: 150 });

  // 16 tiles of 64 with k = 256: panels of 64 KiB, results of 16 KiB.
  const [m, k, n] = [256, 256, 256];
  const a = randomMatrix(m, k, "f32", 31);
  const b = randomMatrix(k, n, "f32", 32);
  const rows = (d, r, c) => Array.from({ length: r }, (_, i) => Array.from(d.subarray(i * c, (i + 1) * c)));
  const job = await getJson(`${server.url}/api/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ a: rows(a, m, k), b: rows(b, k, n), dtype: "f32", tile: 64, name: "on a phone" }),
  });

  // The page comes from the server itself; the link names the shaper as the server to use.
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Each registration's held panels and what the server counted of them: after the reset
  // the page comes back with the panels it had, not an empty cache.
  const registrations = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", ({ payload }) => {
      const m = /^42\["register_worker",(\{.*\})\]$/.exec(String(payload));
      if (m) registrations.push({ holds: JSON.parse(m[1]).panel_cache.holds.length });
    });
    ws.on("framereceived", ({ payload }) => {
      const m = /^42\["registration_ack",(\{.*\})\]$/.exec(String(payload));
      if (m && registrations.length) registrations.at(-1).kept = JSON.parse(m[1]).panels_kept.length;
    });
  });
  await page.goto(`${server.url}/?server=${encodeURIComponent(shaper.url)}`);
  await page.click("#server-confirm");
  await page.selectOption("#threads", "1");
  await page.click("#start");
  const snapshot = () => page.evaluate(() => globalThis.brainVolunteer.snapshot());

  await waitFor(async () => (await getJson(`${server.url}/api/jobs/${job.id}`)).status === "done", "the job over the mobile link", 90_000, 250);
  await waitFor(async () => (await page.textContent('#credit-figures [data-field="tiles"]')) === "16", "the page's credit to settle", 20_000);
  const s = await snapshot();
  const summary = await shaper.stop();
  t.diagnostic(`shaper: ${JSON.stringify(summary)}; page: ${s.connects} connections, ${s.accepted} acknowledged; registrations (panels held → kept): ${JSON.stringify(registrations)}`);
  assert.equal(registrations[0].holds, 0, "a new page holds nothing");
  // The first registration after the reset comes while the job runs: every panel the page
  // held still counts (later ones may come after the job ended, when none do).
  assert.equal(registrations[1].kept, registrations[1].holds, "the panels held after the reset count");
  assert.ok(summary.resets >= 1, `${summary.resets} resets`);
  assert.ok(s.connects >= 2, `the page came back after the reset (${s.connects} connections)`);

  // The product is exact, all of it computed here.
  const res = await fetch(`${server.url}/api/jobs/${job.id}/result`);
  const c = decodeNpy(new Uint8Array(await res.arrayBuffer()));
  const want = referenceProduct(Float64Array.from(a), Float64Array.from(b), m, k, n);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(c.data[i] - want[i]) / (1 + Math.abs(want[i])));
  assert.ok(worst < 1e-4, `largest relative error ${worst}`);

  // What the page shows is what the server counted: every tile credited to it, the credit to
  // the flop; the tiles this visit are those acknowledged (an acknowledgement lost with a reset
  // connection is the only way to show fewer, never more).
  const me = await getJson(`${server.url}/api/volunteers/${s.workerId}`);
  assert.equal(me.tiles, 16);
  assert.equal(s.creditId, s.workerId);
  assert.equal(s.creditTiles, 16);
  assert.equal(await page.textContent('#credit-figures [data-field="all"]'), formatCredit(me.credit_all_time));
  assert.ok(s.accepted <= 16 && s.accepted >= 1, `${s.accepted} acknowledged`);
  assert.equal(await page.textContent("#tasks-done"), String(s.accepted));
  await page.screenshot({ path: join(OUTPUT, "volunteer-mobile-link.png"), fullPage: true });
  assert.deepEqual(errors, []);
});
