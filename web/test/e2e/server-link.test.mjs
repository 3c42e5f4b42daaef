// Attack 11 of docs/security.md: a link names another server (`?server=`). Before the defence,
// the pages saved it without asking, the dashboard sent that server the API token entered for
// the real one, and the volunteer page computed for it. Here a second, "evil" HTTP server
// records every request and socket upgrade it receives, and answers like a willing server
// (open CORS, `Authorization` allowed, 401 on writes to fish for a token), so a token the page
// did send would arrive. The pages are served by the real server (their own origin).

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { startServer, launchBrowser, waitFor, getJson, tempDir, cleanup } from "./helpers.mjs";

setTimeout(() => {
  console.error("browser tests: global time limit reached");
  process.exit(1);
}, 5 * 60_000).unref();

const TOKEN = "s3cret-token";
/** A job name that would run script if the page rendered names as HTML. */
const MARKUP_NAME = `<img src=x onerror="globalThis.__pwned=1">real-job`;

/**
 * The evil server: records each request (`kind` "http" or "upgrade", its Authorization header
 * and the whole of its headers and body as text) and plays along with whatever is asked.
 */
function evilServer() {
  const seen = [];
  const srv = createServer((req, res) => {
    let body = "";
    req.setEncoding("latin1");
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      seen.push({ kind: "http", method: req.method, url: req.url, authorization: req.headers.authorization ?? null, text: JSON.stringify(req.headers) + body });
      res.setHeader("access-control-allow-origin", req.headers.origin ?? "*");
      res.setHeader("access-control-allow-headers", "authorization, content-type");
      res.setHeader("access-control-allow-methods", "GET, POST, DELETE, OPTIONS");
      const path = new URL(req.url, "http://x").pathname;
      if (req.method === "OPTIONS") return res.writeHead(204).end();
      if (req.method === "GET" && (path === "/api/jobs" || path === "/api/workers")) {
        return res.writeHead(200, { "content-type": "application/json" }).end("[]");
      }
      if (path.startsWith("/api/") && !req.headers.authorization) {
        return res.writeHead(401, { "content-type": "application/json" }).end('{"error":"an API token is required"}');
      }
      res.writeHead(404).end();
    });
  });
  // Socket.io's websocket transport arrives as an upgrade: recorded, then refused.
  srv.on("upgrade", (req, socket) => {
    seen.push({ kind: "upgrade", method: req.method, url: req.url, authorization: req.headers.authorization ?? null, text: JSON.stringify(req.headers) });
    socket.destroy();
  });
  return new Promise((r) => srv.listen(0, "127.0.0.1", () => r({ srv, seen, origin: `http://127.0.0.1:${srv.address().port}` })));
}

/** Nothing changes for this long while the prompt is unanswered (nothing is scheduled to). */
const QUIET_MS = 1500;

describe("attack 11: a link that names another server", { timeout: 4 * 60_000 }, () => {
  let dir, server, evil, browser;
  before(async () => {
    dir = tempDir();
    server = await startServer({ dbPath: join(dir, "brain.db"), env: { API_TOKEN: TOKEN } });
    evil = await evilServer();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close().catch(() => {});
    evil?.srv.close();
    evil?.srv.closeAllConnections?.();
    await server?.kill();
    if (dir) cleanup(dir);
  });

  const leaked = () => evil.seen.filter((r) => r.authorization !== null || r.text.includes(TOKEN));

  async function submitRandom(page, name) {
    await page.check("input[name=source][value=random]");
    for (const [id, v] of [["#rand-m", "8"], ["#rand-k", "8"], ["#rand-n", "8"], ["#tile", "8"], ["#job-name", name]]) {
      await page.fill(id, v);
    }
    await page.click("#submit");
  }

  test("the dashboard asks first, sends the link's server nothing before, and never the real server's token", { timeout: 120_000 }, async (t) => {
    const context = await browser.newContext();
    const errors = [];
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(String(e)));

    // Arrange: the person uses the real server and enters its token.
    await page.goto(`${server.url}/dashboard`);
    await page.waitForSelector("#connection[data-state=connected]", { timeout: 30_000 });
    await page.click("summary:has-text('API token')");
    await page.fill("#token", TOKEN);
    await page.press("#token", "Enter");
    assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), `brain.api-token@${server.url}`), TOKEN);
    await submitRandom(page, MARKUP_NAME);
    await page.waitForSelector("#submit-status:has-text('submitted')", { timeout: 30_000 });
    await page.locator("li.job .job-name", { hasText: "real-job" }).waitFor({ timeout: 10_000 });
    assert.equal(await page.textContent("li.job .job-name"), MARKUP_NAME, "names are shown as text");
    assert.equal(await page.locator("#jobs img").count(), 0);
    assert.equal(await page.evaluate(() => globalThis.__pwned), undefined);

    // Act: they follow a link that names the evil server.
    await page.goto(`${server.url}/dashboard?server=${encodeURIComponent(evil.origin)}`);
    const prompt = page.locator("#server-prompt");
    await prompt.waitFor({ timeout: 10_000 });
    assert.equal(await page.textContent("#server-prompt-origin"), evil.origin);
    assert.match(await prompt.textContent(), new RegExp(`instead of ${server.url.replace(/[.]/g, "\\.")}`));
    assert.equal(await page.evaluate(() => document.activeElement?.id), "server-cancel", "the safe answer has the focus");
    await submitRandom(page, "while-asked"); // a person who ignores the prompt
    await page.waitForSelector("#submit-status:has-text('Choose the server first')");
    await page.waitForTimeout(QUIET_MS);
    assert.equal(evil.seen.length, 0, "nothing reaches the link's server before the person answers");
    assert.equal(await page.evaluate(() => globalThis.brainDashboard.server()), null, "and the page uses no server meanwhile");

    // Cancel: the page stays on its own server, and the link leaves no trace.
    await page.click("#server-cancel");
    await page.waitForSelector("#connection[data-state=connected]", { timeout: 30_000 });
    assert.equal(await prompt.count(), 0);
    assert.equal(await page.textContent("#server-shown"), server.url);
    assert.equal(new URL(page.url()).searchParams.get("server"), null);
    await page.locator("li.job", { hasText: "real-job" }).waitFor({ timeout: 10_000 });
    await page.waitForTimeout(QUIET_MS);
    assert.equal(evil.seen.length, 0, "cancelling sends the link's server nothing");
    const beforeConfirm = evil.seen.length;

    // Confirm: now the page talks to the evil server, which fishes for a token with a 401.
    await page.goto(`${server.url}/dashboard?server=${encodeURIComponent(evil.origin)}`);
    await page.click("#server-confirm");
    await waitFor(() => evil.seen.some((r) => r.kind === "upgrade"), "the socket connection to the confirmed server");
    assert.equal(await page.textContent("#server-shown"), evil.origin);
    assert.equal(await page.textContent("#token-server"), evil.origin);
    await submitRandom(page, "to-evil");
    await page.waitForSelector("#submit-status:has-text('needs an API token')", { timeout: 10_000 });
    assert.ok((await page.textContent("#submit-status")).includes(evil.origin), "the 401 asks for the token of the server that answered it");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "token");
    const posts = evil.seen.filter((r) => r.method === "POST");
    assert.ok(posts.length >= 1, "the submission reached the confirmed server");
    assert.deepEqual(leaked(), [], "no request to it carried the real server's token, or any token");

    // A token entered for the evil server goes to it; the real one is still not sent.
    await page.fill("#token", "token-for-evil");
    await page.press("#token", "Enter");
    await page.click("#submit");
    await waitFor(() => evil.seen.some((r) => r.authorization === "Bearer token-for-evil"), "the token entered for the confirmed server");
    assert.deepEqual(evil.seen.filter((r) => r.text.includes(TOKEN)), [], "the real server's token never reached it");

    // Back to the real server (its own link, confirmed): its token is still there, unchanged.
    await page.goto(`${server.url}/dashboard?server=${encodeURIComponent(server.url)}`);
    await page.click("#server-confirm");
    await page.waitForSelector("#connection[data-state=connected]", { timeout: 30_000 });
    await submitRandom(page, "real-again");
    await page.waitForSelector("#submit-status:has-text('submitted')", { timeout: 30_000 });
    const names = (await getJson(`${server.url}/api/jobs`)).map((j) => j.name);
    assert.ok(names.includes(MARKUP_NAME) && names.includes("real-again") && !names.includes("while-asked"), names.join(","));

    t.diagnostic(`evil server: ${beforeConfirm} requests before confirmation, ${evil.seen.length} after ` +
      `(${evil.seen.filter((r) => r.kind === "upgrade").length} socket upgrade(s), ${posts.length} unauthorised POST(s) answered 401), ` +
      `${evil.seen.filter((r) => r.text.includes(TOKEN)).length} carrying the real token`);
    assert.deepEqual(errors, []);
    await context.close();
  });

  test("the volunteer page asks first and connects to the link's server only after the person confirms and starts", { timeout: 120_000 }, async (t) => {
    evil.seen.length = 0;
    const context = await browser.newContext();
    const errors = [];
    const snapshot = (p) => p.evaluate(() => globalThis.brainVolunteer.snapshot());
    const link = `${server.url}/?server=${encodeURIComponent(evil.origin)}`;

    let page = await context.newPage();
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(link);
    await page.locator("#server-prompt").waitFor({ timeout: 10_000 });
    assert.equal(await page.textContent("#server-prompt-origin"), evil.origin);
    assert.equal(await page.isDisabled("#start"), true, "nothing can start before the person answers");
    assert.equal((await snapshot(page)).serverPending, evil.origin);
    await page.waitForTimeout(QUIET_MS);
    assert.equal(evil.seen.length, 0);

    // Cancel, then start: the page computes for its own server.
    await page.click("#server-cancel");
    assert.equal((await snapshot(page)).server, server.url);
    await page.selectOption("#threads", "1");
    await page.click("#start");
    await waitFor(async () => (await snapshot(page)).registered, "registration with the page's own server");
    assert.equal(evil.seen.length, 0, "cancelling keeps the volunteer off the link's server");
    await page.close();

    // Confirm: still nothing until start, then the connection goes to the confirmed server.
    page = await context.newPage();
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(link);
    await page.click("#server-confirm");
    assert.equal((await snapshot(page)).server, evil.origin);
    await page.waitForTimeout(QUIET_MS);
    assert.equal(evil.seen.length, 0, "a confirmed server gets nothing before start either");
    await page.click("#start");
    await waitFor(() => evil.seen.some((r) => r.kind === "upgrade"), "the socket connection to the confirmed server");
    t.diagnostic(`evil server: 0 requests before confirmation and start, ${evil.seen.length} after`);
    assert.deepEqual(errors, []);
    await context.close();
  });
});
