// The pages served from another origin than the server's (`?server=`), and a server that
// requires an API token: the dashboard asks for it once and keeps it for the tab. The server
// named by the link is confirmed on the volunteer page; the dashboard then uses it too.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { startServer, launchBrowser, waitFor, getJson, tempDir, cleanup, WEB_DIR } from "./helpers.mjs";

setTimeout(() => {
  console.error("browser tests: global time limit reached");
  process.exit(1);
}, 5 * 60_000).unref();

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm", ".json": "application/json", ".map": "application/json" };

/** A plain static server for web/dist on another port: another origin. */
function staticServer() {
  const srv = createServer(async (req, res) => {
    let path = new URL(req.url, "http://x").pathname;
    if (path === "/") path = "/index.html";
    if (path === "/dashboard") path = "/dashboard.html";
    try {
      const body = await readFile(join(WEB_DIR, normalize(path).replace(/^(\.\.[/\\])+/, "")));
      res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((r) => srv.listen(0, "127.0.0.1", () => r(srv)));
}

describe("another origin, and an API token", { timeout: 4 * 60_000 }, () => {
  let dir, server, pages, browser;
  before(async () => {
    dir = tempDir();
    server = await startServer({ dbPath: join(dir, "brain.db"), env: { API_TOKEN: "s3cret-token" } });
    pages = await staticServer();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close().catch(() => {});
    pages?.close();
    await server?.kill();
    if (dir) cleanup(dir);
  });

  test("pages from another origin compute for the configured server; the token is asked once", { timeout: 120_000 }, async () => {
    const origin = `http://localhost:${pages.address().port}`;
    const context = await browser.newContext();
    const errors = [];
    const volunteer = await context.newPage();
    volunteer.on("pageerror", (e) => errors.push(String(e)));
    await volunteer.goto(`${origin}/?server=${encodeURIComponent(server.url)}`);
    await volunteer.click("#server-confirm"); // a server named by a link is used once confirmed
    await volunteer.selectOption("#threads", "1");
    await volunteer.click("#start");
    await waitFor(() => volunteer.evaluate(() => globalThis.brainVolunteer.snapshot().registered), "registration across origins");

    const dashboard = await context.newPage();
    dashboard.on("pageerror", (e) => errors.push(String(e)));
    await dashboard.goto(`${origin}/dashboard`); // the stored server address is used
    await dashboard.check("input[name=source][value=random]");
    for (const [id, v] of [["#rand-m", "40"], ["#rand-k", "30"], ["#rand-n", "20"], ["#tile", "16"], ["#job-name", "with-token"]]) {
      await dashboard.fill(id, v);
    }
    await dashboard.click("#submit");
    await dashboard.waitForSelector("#submit-status:has-text('needs an API token')", { timeout: 10_000 });
    assert.equal(await dashboard.evaluate(() => document.activeElement?.id), "token");
    await dashboard.fill("#token", "s3cret-token");
    await dashboard.press("#token", "Enter");
    assert.equal(await dashboard.evaluate((k) => sessionStorage.getItem(k), `brain.api-token@${server.url}`), "s3cret-token");
    await dashboard.click("#submit");
    const row = dashboard.locator("li.job", { hasText: "with-token" });
    await row.and(dashboard.locator("[data-status=done]")).waitFor({ timeout: 60_000 });
    const [download] = await Promise.all([dashboard.waitForEvent("download"), row.locator("button[data-action=download]").click()]);
    assert.ok((await download.path()) !== null);
    const jobs = await getJson(`${server.url}/api/jobs`);
    assert.equal(jobs[0].name, "with-token");
    assert.deepEqual(errors, []);
    await context.close();
  });
});
