// A rolling deploy as a volunteer sees it: the page, behind a balancer in front of two
// instances on one PostgreSQL and one Redis, computes; the instance it is connected to gets
// SIGTERM. The page says the server is restarting, comes back through the balancer to the
// other instance with its identity, goes on computing, and at no point shows an error.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, launchBrowser, waitFor, getJson, tempDir, cleanup, randomMatrix } from "./helpers.mjs";
import { createDatabase, startPostgres } from "../../../tests/support/postgres.mjs";
import { startRedis } from "../../../tests/support/redis.mjs";
import { startBalancer } from "../../../tests/support/balancer.mjs";

setTimeout(() => {
  console.error("cluster browser test: time limit reached");
  process.exit(1);
}, 4 * 60_000).unref();

test("a rolling deploy: the page comes back through the balancer to the other instance and shows no error", { timeout: 180_000 }, async (t) => {
  const dir = tempDir();
  t.after(() => cleanup(dir));
  const [pg, redis] = await Promise.all([startPostgres({ t }), startRedis({ t })]);
  const env = { DATABASE_URL: await createDatabase(pg), REDIS_URL: redis.url };
  const servers = {};
  for (const name of ["a", "b"]) {
    servers[name] = await startServer({ dbPath: join(dir, `${name}.db`), env: { ...env, DATA_DIR: join(dir, `${name}-jobs`) } });
    t.after(() => servers[name].kill());
  }
  const balancer = await startBalancer({ t, ports: [servers.a.port, servers.b.port] });
  const browser = await launchBrowser();
  t.after(() => browser.close().catch(() => {}));
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(balancer.url + "/");
  // Every text the connection line shows, from now on.
  await page.evaluate(() => {
    globalThis.connectionTexts = [];
    const line = document.getElementById("connection");
    new MutationObserver(() => globalThis.connectionTexts.push(line.textContent)).observe(line, {
      childList: true, characterData: true, subtree: true,
    });
  });
  await page.click("#start");
  const snapshot = () => page.evaluate(() => globalThis.brainVolunteer.snapshot());
  const { workerId } = await waitFor(async () => {
    const s = await snapshot();
    return s.registered && s;
  }, "the page to register");
  const holderOf = async () => {
    for (const name of ["a", "b"]) {
      const listed = await getJson(`${servers[name].url}/api/workers`).catch(() => []);
      if (listed.some((w) => w.worker_id === workerId)) return name;
    }
  };
  const first = await waitFor(holderOf, "an instance to list the page");
  const other = first === "a" ? "b" : "a";
  const matrix = (rows, cols, seed) => {
    const d = randomMatrix(rows, cols, "f64", seed);
    return Array.from({ length: rows }, (_, i) => Array.from(d.subarray(i * cols, (i + 1) * cols)));
  };
  const submit = (seed) =>
    getJson(`${servers[other].url}/api/jobs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ a: matrix(40, 16, seed), b: matrix(16, 40, seed + 1), tile: 8 }),
    });
  const done = async (id) => (await getJson(`${servers[other].url}/api/jobs/${id}`)).status === "done";
  const before = await submit(1);
  await waitFor(() => done(before.id), "a job computed before the deploy", 60_000);

  servers[first].proc.kill("SIGTERM");
  assert.equal((await servers[first].exited).code, 0, `${first} stopped cleanly`);
  await waitFor(async () => (await holderOf()) === other, `the page to come back on ${other}`, 30_000);
  const after = await submit(3);
  await waitFor(() => done(after.id), "a job computed after the deploy", 60_000);

  const s = await snapshot();
  assert.equal(s.workerId, workerId, "the same identity");
  assert.match(await page.textContent("#connection"), /^connected/);
  const texts = await page.evaluate(() => globalThis.connectionTexts);
  assert.ok(texts.some((x) => /server restarting/.test(x)), `the page said the server was restarting: ${texts}`);
  assert.deepEqual(texts.filter((x) => /disconnected|cannot reach|error/i.test(x)), [], "no error on the connection line");
  const log = await page.textContent("#log");
  assert.doesNotMatch(log, /refused|error|failed/i, "no error in the page's log");
  assert.deepEqual(pageErrors, []);
});
