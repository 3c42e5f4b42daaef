// Browser tests of the volunteer page and the dashboard against the real server: a volunteer
// computes a job submitted through the dashboard, the product downloads correctly, tiles that
// share panels reuse the page's panel cache, pause stops the requests, and a server restart is
// survived. Screenshots go to test-output/web/.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  startServer, launchBrowser, waitFor, getJson, randomMatrix, referenceProduct, tempDir, cleanup, OUTPUT, WEB_DIR,
} from "./helpers.mjs";
import { encodeNpy, decodeNpy } from "../../src/common/npy.js";
import { affordableCache } from "../../src/volunteer/cache-budget.js";

// Whatever happens, this process ends: a hung browser must not hang CI.
setTimeout(() => {
  console.error("browser tests: global time limit reached");
  process.exit(1);
}, 8 * 60_000).unref();

const T = { timeout: 120_000 };

describe("volunteer page and dashboard in Chromium", { timeout: 7 * 60_000 }, () => {
  let dir, dbPath, server, browser, context, volunteer, dashboard;
  const pageErrors = [];
  const missing = [];

  const snapshot = () => volunteer.evaluate(() => globalThis.brainVolunteer.snapshot());
  const job = (id) => getJson(`${server.url}/api/jobs/${id}`);
  const submitJson = (body) =>
    getJson(`${server.url}/api/jobs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const matrixJson = (rows, cols, seed) => {
    const d = randomMatrix(rows, cols, "f64", seed);
    return Array.from({ length: rows }, (_, i) => Array.from(d.subarray(i * cols, (i + 1) * cols)));
  };

  before(async () => {
    dir = tempDir();
    dbPath = join(dir, "brain.db");
    server = await startServer({ dbPath });
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    for (const p of [(volunteer = await context.newPage()), (dashboard = await context.newPage())]) {
      p.on("pageerror", (e) => pageErrors.push(String(e)));
      // Every resource the pages load exists (the API's own 4xx answers are tested elsewhere).
      p.on("response", (r) => {
        const path = new URL(r.url()).pathname;
        if (r.status() >= 400 && !path.startsWith("/api/")) missing.push(`${r.status()} ${path}`);
      });
    }
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.kill();
    if (dir) cleanup(dir);
  });

  test("the volunteer starts two compute threads on the fastest kernel", T, async () => {
    await volunteer.goto(server.url + "/");
    assert.equal(await volunteer.textContent("#phase"), "Not started: nothing runs until you press start.");
    // Before start there is no connection, yet the grid's figures are there (/api/status).
    const status = await getJson(`${server.url}/api/status`);
    await waitFor(async () => (await volunteer.textContent("#grid-workers")) === String(status.workers_online), "the grid's size before start", 5000);
    assert.equal(await volunteer.textContent("#grid-speed"), "0 GFLOP/s · 0.0 tiles/s", "an idle grid's speed is 0");
    assert.equal(await volunteer.textContent("#grid-jobs"), "0");
    await volunteer.selectOption("#threads", "2");
    await volunteer.click("#start");
    const s = await waitFor(async () => {
      const s = await snapshot();
      return s.registered && s.threads === 2 && s;
    }, "two ready threads and a registration");
    // Chromium validates relaxed SIMD: the page must pick the fastest build that was shipped.
    const shipped = Object.keys(JSON.parse(readFileSync(join(WEB_DIR, "wasm-manifest.json"), "utf8")).variants);
    assert.equal(s.variant, ["relaxed", "simd", "scalar"].find((v) => shipped.includes(v)));
    await waitFor(async () => /checked by SRI \+ SHA-256/.test(await volunteer.textContent("#kernel")), "the kernel line", 5000);
    assert.equal(await volunteer.textContent("#start"), "Pause");
    assert.equal(await volunteer.evaluate(() => localStorage.getItem("brain.threads")), "2");
    assert.ok(s.pending >= 4, `keeps two requests per thread open (${s.pending})`);
    await waitFor(async () => (await volunteer.textContent("#grid-workers")) === "1", "grid stats");
  });

  test("a job submitted on the dashboard, k in two slices, is computed here and downloads correctly", T, async () => {
    const [m, k, n] = [150, 70, 130];
    const a = randomMatrix(m, k, "f32", 11);
    const b = randomMatrix(k, n, "f32", 12);
    await dashboard.goto(server.url + "/dashboard");
    // Both pages and the API count this volunteer from the dashboard's first paint on.
    assert.equal((await getJson(`${server.url}/api/status`)).workers_online, 1);
    await waitFor(async () => (await dashboard.textContent("#grid-workers")) === "1", "the dashboard's grid card", 5000);
    assert.equal(await volunteer.textContent("#grid-workers"), "1");
    await dashboard.setInputFiles("#file-a", { name: "a.npy", mimeType: "application/octet-stream", buffer: Buffer.from(encodeNpy(a, m, k)) });
    await dashboard.setInputFiles("#file-b", { name: "b.npy", mimeType: "application/octet-stream", buffer: Buffer.from(encodeNpy(b, k, n)) });
    await dashboard.fill("#tile", "64");
    await dashboard.fill("#k-split", "2");
    await dashboard.fill("#job-name", "uneven");
    await dashboard.click("#submit");
    // 3 × 3 tiles, each as two partial products over k's halves, which the server sums.
    await dashboard.waitForSelector("#submit-status:has-text('submitted: 18 tiles')", { timeout: 20_000 });
    const row = dashboard.locator("li.job", { hasText: "uneven" });
    await row.locator("button[data-action=show]").click();
    await row.and(dashboard.locator("[data-status=done]")).waitFor({ timeout: 60_000 });
    await waitFor(async () => /3×3 tiles in 2 slices of k, side by side \(3×6 tasks\) · 18 done/.test(await dashboard.textContent("#detail-summary")), "the tile picture to fill in", 10_000);
    assert.match(await row.textContent(), /tile 64, k in 2 slices/);
    const [download] = await Promise.all([
      dashboard.waitForEvent("download", { timeout: 20_000 }),
      row.locator("button[data-action=download]").click(),
    ]);
    const c = decodeNpy(readFileSync(await download.path()));
    assert.equal(c.dtype, "f32");
    assert.deepEqual([c.rows, c.cols], [m, n]);
    const want = referenceProduct(a, b, m, k, n);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(c.data[i] - want[i]) / (1 + Math.abs(want[i])));
    assert.ok(worst < 1e-4, `largest relative error ${worst}`);
    const s = await snapshot();
    assert.ok(s.accepted >= 18, `this browser computed the tiles (${s.accepted} accepted)`);
    // A tab sent to the background tells the server (headless tabs all count as visible,
    // so the page is told it is hidden the way the browser would).
    const setVisibility = (state) =>
      volunteer.evaluate((state) => {
        Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
        document.dispatchEvent(new Event("visibilitychange"));
      }, state);
    await setVisibility("hidden");
    await waitFor(async () => (await getJson(`${server.url}/api/workers`))[0]?.visible === false, "worker_status visible=false", 5000);
    await setVisibility("visible");
    await waitFor(async () => (await getJson(`${server.url}/api/workers`))[0]?.visible === true, "worker_status visible=true", 5000);
    console.log(`# measured ${s.gflopsPerThread.toFixed(2)} GFLOP/s per thread (${s.variant})`);
    await dashboard.screenshot({ path: join(OUTPUT, "dashboard.png"), fullPage: true });
  });

  test("random matrices generated on the dashboard make a job that finishes", T, async () => {
    await dashboard.check("input[name=source][value=random]");
    await dashboard.fill("#rand-m", "100");
    await dashboard.fill("#rand-k", "33");
    await dashboard.fill("#rand-n", "77");
    await dashboard.selectOption("#rand-dtype", "f64");
    await dashboard.fill("#tile", "40");
    await dashboard.fill("#job-name", "random-f64");
    await dashboard.click("#submit");
    const row = dashboard.locator("li.job", { hasText: "random-f64" });
    await row.and(dashboard.locator("[data-status=done]")).waitFor({ timeout: 60_000 });
    assert.match(await row.textContent(), /100×33 · 33×77 f64/);
  });

  test("tiles that share panels are computed from the page's panel cache", T, async () => {
    const bytesSent = async () => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      return Number(/^brain_bytes_sent_total (\d+)$/m.exec(text)[1]);
    };
    // 3×3 tiles: each A row panel serves three tiles, each B column panel three.
    const [m, k, n, tile] = [48, 40, 48, 16];
    const [a, b] = [matrixJson(m, k, 21), matrixJson(k, n, 22)];
    const before = await bytesSent();
    const created = await submitJson({ a, b, dtype: "f64", tile, name: "shared-panels" });
    await waitFor(async () => (await job(created.id)).status === "done", "the shared-panels job to finish", 60_000);
    const sent = (await bytesSent()) - before;
    const res = await fetch(`${server.url}/api/jobs/${created.id}/result`);
    assert.equal(res.status, 200);
    const c = decodeNpy(new Uint8Array(await res.arrayBuffer()));
    assert.deepEqual([c.dtype, c.rows, c.cols], ["f64", m, n]);
    const want = referenceProduct(Float64Array.from(a.flat()), Float64Array.from(b.flat()), m, k, n);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(c.data[i] - want[i]) / (1 + Math.abs(want[i])));
    assert.ok(worst < 1e-12, `largest relative error ${worst}`);
    const panelBytes = tile * k * 8;
    const naive = 9 * 2 * panelBytes;
    assert.ok(sent >= 6 * panelBytes, `every panel travelled at least once (${sent} bytes)`);
    assert.ok(sent < naive, `panels were reused: ${sent} bytes sent, ${naive} without a cache`);
    assert.ok((await snapshot()).cachedPanels > 0, "the page holds panels");
    console.log(`# shared-panels job: ${sent} of ${naive} panel bytes sent`);
  });

  test("with one thread panels are moved to it, not copied; a thread that joins starts the cache afresh", T, async () => {
    const sharedJob = async (seed, name) => {
      const [m, k, n, tile] = [48, 40, 48, 16];
      const [a, b] = [matrixJson(m, k, seed), matrixJson(k, n, seed + 1)];
      const created = await submitJson({ a, b, dtype: "f64", tile, name });
      await waitFor(async () => (await job(created.id)).status === "done", `the ${name} job to finish`, 60_000);
    };
    await volunteer.selectOption("#threads", "1");
    await waitFor(async () => (await snapshot()).threads === 1, "one thread", 10_000);
    const before = await snapshot();
    await sharedJob(31, "moved-panels");
    const one = await snapshot();
    // The job's 3 A and 3 B panels: the only thread was given their own buffers.
    assert.ok(one.movedPanels - before.movedPanels >= 6, `moved: ${before.movedPanels} → ${one.movedPanels}`);
    // A second thread could not be handed the moved panels: the page starts afresh, and
    // tiles keep coming, from both threads, with nothing refused or failed.
    await volunteer.selectOption("#threads", "2");
    await waitFor(async () => (await snapshot()).threads === 2, "two threads", 20_000);
    const two = await snapshot();
    assert.equal(two.movedPanels, 0);
    await sharedJob(33, "after-a-thread-joined");
    const after = await snapshot();
    assert.equal(after.refused - before.refused, 0);
    assert.equal(after.failed - before.failed, 0);
    assert.ok(after.accepted - before.accepted >= 18, `both jobs' tiles computed here (${after.accepted - before.accepted})`);
    // What the page delivered, beside what its kernel can: the verified work of late.
    assert.ok(after.effectiveGflops > 0, `effective speed ${after.effectiveGflops}`);
    await waitFor(async () => /GFLOP\/s|MFLOP\/s/.test(await volunteer.textContent("#speed-effective")), "the effective speed shown", 5000);
  });

  test("the panel cache is sized for the device, shown, and a new size is announced on a new connection", T, async () => {
    const deviceMemory = await volunteer.evaluate(() => navigator.deviceMemory ?? null);
    const offered = await volunteer.$$eval("#cache option", (os) => os.map((o) => Number(o.value)));
    const afford = affordableCache(deviceMemory ?? undefined);
    assert.deepEqual(offered, afford.choices);
    assert.equal(Number(await volunteer.inputValue("#cache")), afford.defaultMib);
    assert.equal((await snapshot()).cacheBytes, afford.defaultMib * 1024 * 1024);
    // What the page tells the server: the register_worker frame on the new connection.
    const announced = new Promise((resolve) => {
      volunteer.on("websocket", (ws) =>
        ws.on("framesent", ({ payload }) => {
          const m = /"register_worker",(\{.*\})\]$/.exec(String(payload));
          if (m) resolve(JSON.parse(m[1]).panel_cache.budget_bytes);
        }),
      );
    });
    await volunteer.selectOption("#cache", "64");
    assert.equal(await announced, 64 * 1024 * 1024);
    assert.equal((await snapshot()).cacheBytes, 64 * 1024 * 1024);
    assert.equal(await volunteer.evaluate(() => localStorage.getItem("brain.cache-mib")), "64");
    await waitFor(async () => (await snapshot()).registered, "registered again", 10_000);
  });

  test("pause stops requesting work; resume picks it up", T, async () => {
    await volunteer.bringToFront(); // a background tab does not repaint
    await volunteer.click("#start"); // Pause
    const paused = await waitFor(async () => {
      const s = await snapshot();
      return s.phase === "paused" && s.registered && s.pending === 0 && s.queued === 0 && s.computing === 0 && s;
    }, "a quiet, registered, paused page");
    await waitFor(async () => (await volunteer.textContent("#start")) === "Resume", "the button to offer resuming", 5000);
    const created = await submitJson({ a: matrixJson(20, 10, 1), b: matrixJson(10, 20, 2), dtype: "f64", tile: 8, name: "while-paused" });
    await new Promise((r) => setTimeout(r, 3000));
    const s = await snapshot();
    assert.equal(s.requestsSent, paused.requestsSent, "no request_task while paused");
    assert.equal(s.accepted, paused.accepted);
    assert.equal((await job(created.id)).tasks_done, 0);
    // Meanwhile, a job cancelled from the dashboard stops for good.
    const doomed = await submitJson({ a: matrixJson(16, 4, 5), b: matrixJson(4, 16, 6), tile: 4, name: "to-cancel" });
    const row = dashboard.locator("li.job", { hasText: "to-cancel" });
    dashboard.once("dialog", (d) => d.accept());
    await row.locator("button[data-action=cancel]").click({ timeout: 10_000 });
    await row.and(dashboard.locator("[data-status=cancelled]")).waitFor({ timeout: 10_000 });
    assert.equal((await job(doomed.id)).status, "cancelled");
    // Resume at half the CPU share with one thread: tiles are then computed in row bands.
    await volunteer.check("#duty-50");
    await volunteer.selectOption("#threads", "1");
    await volunteer.click("#start"); // Resume
    await waitFor(async () => (await snapshot()).threads === 1, "one thread", 10_000);
    await waitFor(async () => (await job(created.id)).status === "done", "the job to finish after resuming", 60_000);
    assert.equal(await volunteer.evaluate(() => localStorage.getItem("brain.duty")), "0.5");
    await volunteer.check("#duty-100");
    await volunteer.selectOption("#threads", "2");
    await waitFor(async () => (await snapshot()).threads === 2, "two threads again", 20_000);
  });

  test("a server restart is survived by reconnecting", T, async () => {
    const port = server.port;
    await server.kill("SIGKILL");
    await waitFor(async () => !(await snapshot()).connected, "the page to notice", 30_000);
    server = await startServer({ dbPath, port });
    await waitFor(async () => {
      const s = await snapshot();
      return s.connected && s.registered;
    }, "reconnection and registration", 30_000);
    const created = await submitJson({ a: matrixJson(30, 12, 3), b: matrixJson(12, 25, 4), tile: 16, name: "after-restart" });
    await waitFor(async () => (await job(created.id)).status === "done", "the job to finish after the restart", 60_000);
    assert.match(await volunteer.textContent("#connection"), /connected/);
  });

  test("screenshots: both pages on a desktop and a phone", T, async () => {
    await volunteer.screenshot({ path: join(OUTPUT, "volunteer.png"), fullPage: true });
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true });
    try {
      const p = await phone.newPage();
      await p.goto(server.url + "/");
      await p.screenshot({ path: join(OUTPUT, "volunteer-phone.png"), fullPage: true });
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `volunteer page is ${overflow}px wider than a phone`);
      await p.goto(server.url + "/dashboard");
      await p.locator("li.job").first().waitFor({ timeout: 10_000 });
      await p.screenshot({ path: join(OUTPUT, "dashboard-phone.png"), fullPage: true });
      const overflow2 = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow2 <= 0, `dashboard is ${overflow2}px wider than a phone`);
    } finally {
      await phone.close();
    }
    assert.deepEqual(pageErrors, [], "no uncaught errors on either page");
    assert.deepEqual(missing, [], "no resource of either page is missing");
    // Headless Chromium asks for no favicon; a visitor's browser asks for /favicon.ico unless
    // the page names one: both pages carry theirs inline, so that request never happens.
    for (const p of [volunteer, dashboard]) {
      const icon = await p.evaluate(() => document.querySelector("link[rel=icon]")?.href ?? "");
      assert.match(icon, /^data:image\/svg\+xml,/, `${p.url()} names its icon`);
    }
  });
});
