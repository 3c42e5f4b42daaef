// Browser tests of credit (#15) against the real server: a volunteer earns credit, names
// itself and joins a team; comes back "tomorrow" (the test database's days moved back one)
// and sees yesterday's work before pressing start; hostile names planted in the database
// show as text on the dashboard's boards, the profile page and the volunteer page; the
// identity moves to another browser with a code. Screenshots go to test-output/web/.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { startServer, launchBrowser, waitFor, getJson, randomMatrix, tempDir, cleanup, OUTPUT } from "./helpers.mjs";
import { formatCredit } from "../../src/common/credit.js";

// Whatever happens, this process ends: a hung browser must not hang CI.
setTimeout(() => {
  console.error("credit browser tests: global time limit reached");
  process.exit(1);
}, 5 * 60_000).unref();

const T = { timeout: 90_000 };
const HOSTILE_NAME = `<img src=x onerror="globalThis.__pwned=1">`;
const HOSTILE_TEAM = `<b onmouseover="globalThis.__pwned=2">Pwn</b>`;

/** Runs SQL on the server's SQLite file, as a second writer (it waits out the server's locks). */
function sql(dbPath, script) {
  const py = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1],timeout=10)\nc.executescript(sys.argv[2])\nc.commit()";
  execFileSync("python3", ["-c", py, dbPath, script]);
}

describe("credit in Chromium", { timeout: 4 * 60_000 }, () => {
  let dir, dbPath, server, browser, home, volunteer;
  const pageErrors = [];
  let me; // the volunteer's profile, from the API

  const snapshot = (page = volunteer) => page.evaluate(() => globalThis.brainVolunteer.snapshot());
  const field = (page, root, name) => page.textContent(`${root} [data-field="${name}"]`);
  const watch = (page) => page.on("pageerror", (e) => pageErrors.push(String(e)));

  before(async () => {
    dir = tempDir();
    dbPath = join(dir, "brain.db");
    server = await startServer({ dbPath });
    browser = await launchBrowser();
    home = await browser.newContext({ viewport: { width: 1280, height: 1400 } });
    watch((volunteer = await home.newPage()));
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.kill();
    if (dir) cleanup(dir);
  });

  test("a volunteer earns credit for verified tiles, names itself and joins a team", T, async () => {
    await volunteer.goto(server.url + "/");
    assert.match(await volunteer.textContent("#credit-note"), /none yet, until you start once/);
    assert.equal(await volunteer.isDisabled("#me-save"), true, "no identity, nothing to name");
    await volunteer.selectOption("#threads", "1");
    await volunteer.click("#start");
    await waitFor(async () => (await snapshot()).registered, "registration");
    await waitFor(async () => !(await volunteer.isDisabled("#me-save")), "an identity to name");
    // A name with markup is refused by the server, and the page says why; nothing is rendered.
    await volunteer.fill("#me-name", HOSTILE_NAME);
    await volunteer.click("#me-save");
    await waitFor(async () => /^Not saved: name: /.test(await volunteer.textContent("#me-status")), "the refusal");
    assert.equal(await volunteer.locator("#credit img").count(), 0);
    // Opt in: a name and a team, created by joining it; the team earns what its members earn
    // while they are members.
    await volunteer.fill("#me-name", "Ada Lovelace");
    await volunteer.fill("#me-team", "Brain Trust");
    await volunteer.click("#me-save");
    await waitFor(async () => (await volunteer.textContent("#me-status")) === "Saved: shown as “Ada Lovelace”, in team “Brain Trust”.", "the save");
    assert.equal(await field(volunteer, "#credit-figures", "name"), "Ada Lovelace");
    assert.equal(await field(volunteer, "#credit-figures", "team"), "Brain Trust");

    // 2×2 tiles of 128 with k = 256: each earns 2·128·256·128 flops.
    const [m, k, n] = [256, 256, 256];
    const matrix = (rows, cols, seed) => {
      const d = randomMatrix(rows, cols, "f32", seed);
      return Array.from({ length: rows }, (_, i) => Array.from(d.subarray(i * cols, (i + 1) * cols)));
    };
    const job = await getJson(`${server.url}/api/jobs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ a: matrix(m, k, 1), b: matrix(k, n, 2), dtype: "f32", tile: 128, name: "credit" }),
    });
    await waitFor(async () => (await getJson(`${server.url}/api/jobs/${job.id}`)).status === "done", "the job", 60_000);
    const { workerId } = await snapshot();
    me = await getJson(`${server.url}/api/volunteers/${workerId}`);
    const earned = (4 * 2 * 128 * k * 128) / 1e9;
    assert.ok(Math.abs(me.credit_all_time - earned) < 1e-9, `${me.credit_all_time} GFLOP verified, ${earned} expected`);
    // The page's figures agree with the server's, without a reload.
    await waitFor(async () => (await field(volunteer, "#credit-figures", "all")) === formatCredit(earned), "the page's all-time credit");
    assert.equal(await field(volunteer, "#credit-figures", "today"), formatCredit(earned));
    await waitFor(async () => (await field(volunteer, "#credit-figures", "tiles")) === "4", "the page's tiles");
    // A first tile puts the volunteer on the board: the page reads its rank soon after.
    await waitFor(async () => (await field(volunteer, "#credit-figures", "rank")) === "#1", "the page's rank", 10_000);

    // The dashboard's boards list them, and the name leads to the public profile.
    const dashboard = await home.newPage();
    watch(dashboard);
    await dashboard.goto(server.url + "/dashboard");
    await waitFor(async () => (await dashboard.textContent("#board tr:first-child td.name")) === "Ada Lovelace", "the volunteers' board");
    const row = await dashboard.$$eval("#board tr:first-child td", (tds) => tds.map((td) => td.textContent));
    assert.deepEqual(row, ["#1", "Ada Lovelace", "Brain Trust", formatCredit(earned), "4"]);
    await dashboard.selectOption("#board-kind", "teams");
    await waitFor(async () => (await dashboard.textContent("#board-third")) === "Members", "the teams' board");
    await waitFor(async () => (await dashboard.textContent("#board tr:first-child td.name")) === "Brain Trust", "the team's row");
    assert.equal(await dashboard.textContent("#board tr:first-child td:nth-child(3)"), "1 member");
    await dashboard.selectOption("#board-kind", "volunteers");
    await waitFor(async () => (await dashboard.textContent("#board tr:first-child td.name")) === "Ada Lovelace", "the volunteers' board again");
    await dashboard.click("#board tr:first-child td.name a");
    await dashboard.waitForURL(/\/profile\?id=/);
    await waitFor(async () => (await dashboard.textContent("#profile-h")) === "Ada Lovelace", "the profile page");
    assert.equal(await field(dashboard, "#profile", "all"), formatCredit(earned));
    assert.equal(await field(dashboard, "#profile", "team"), "Brain Trust");
    assert.equal(await field(dashboard, "#profile", "rank"), "#1");
    await dashboard.screenshot({ path: join(OUTPUT, "credit-profile.png"), fullPage: true });
    await dashboard.close();
  });

  test("a volunteer who comes back the next day sees yesterday's credit before pressing start", T, async () => {
    await volunteer.close();
    // "Tomorrow": every credited day moves back one in the test database.
    sql(dbPath, `UPDATE volunteer_credit_daily SET day = day - 1;
      UPDATE team_credit_daily SET day = day - 1;
      UPDATE tasks SET credit_day = credit_day - 1 WHERE credit_day IS NOT NULL;`);
    watch((volunteer = await home.newPage()));
    await volunteer.goto(server.url + "/");
    const all = formatCredit(me.credit_all_time);
    await waitFor(async () => (await field(volunteer, "#credit-figures", "all")) === all, "all-time credit on a new visit");
    assert.equal(await field(volunteer, "#credit-figures", "today"), "0 GFLOP");
    assert.equal(await field(volunteer, "#credit-figures", "week"), all);
    assert.equal(await field(volunteer, "#credit-figures", "rank"), "#1");
    assert.equal(await field(volunteer, "#credit-figures", "name"), "Ada Lovelace");
    assert.equal(await volunteer.inputValue("#me-team"), "Brain Trust");
    // The chart: 30 days, yesterday's bar the only one with credit.
    const bars = await volunteer.$$eval("#credit-chart rect", (rs) => rs.map((r) => [r.dataset.date, Number(r.dataset.credit)]));
    assert.equal(bars.length, 30);
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    assert.deepEqual(bars.filter(([, c]) => c > 0).map(([d]) => d), [yesterday]);
    assert.equal(bars.at(-1)[1], 0, "nothing today");
    const s = await snapshot();
    assert.equal(s.phase, "idle");
    assert.equal(s.connected, false, "read over HTTP, with no connection before start");
    assert.equal(s.creditId, me.id);
    assert.match(await volunteer.getAttribute("#profile-link", "href"), new RegExp(`profile\\?id=${me.id}$`));
    await volunteer.screenshot({ path: join(OUTPUT, "credit-volunteer-next-day.png"), fullPage: true });
  });

  test("hostile names planted in the database are shown as text on every page", T, async () => {
    const now = Date.now();
    // A volunteer and a team that bypassed the server's checks (an old row, a bad migration),
    // ranked above everyone; and this volunteer's own name made hostile too.
    sql(dbPath, `INSERT INTO teams (id, name, name_key, created_at) VALUES ('t-hostile', '${HOSTILE_TEAM}', 'pwn', ${now});
      INSERT INTO workers (id, name, first_seen, last_seen, display_name, team_id)
        VALUES ('00000000-0000-0000-0000-00000000bad1', 'x', ${now}, ${now}, '${HOSTILE_NAME}', 't-hostile');
      INSERT INTO volunteer_credit (worker_id, flops, tiles, compute_ms) VALUES ('00000000-0000-0000-0000-00000000bad1', 1000000000000, 1, 1);
      INSERT INTO team_credit (team_id, flops, tiles, compute_ms) VALUES ('t-hostile', 1000000000000, 1, 1);
      UPDATE workers SET display_name = '${HOSTILE_NAME}' WHERE id = '${me.id}';`);
    const dashboard = await home.newPage();
    watch(dashboard);
    await dashboard.goto(server.url + "/dashboard");
    await waitFor(async () => (await dashboard.textContent("#board tr:first-child td.name")) === HOSTILE_NAME, "the hostile volunteer's row");
    assert.equal(await dashboard.textContent("#board tr:first-child td:nth-child(3)"), HOSTILE_TEAM);
    assert.equal(await dashboard.textContent("#board tr:nth-child(2) td.name"), HOSTILE_NAME);
    await dashboard.selectOption("#board-kind", "teams");
    await waitFor(async () => (await dashboard.textContent("#board tr:first-child td.name")) === HOSTILE_TEAM, "the hostile team's row");
    assert.equal(await dashboard.locator("#board img, #board b").count(), 0, "no element was made of a name");
    await dashboard.screenshot({ path: join(OUTPUT, "credit-boards-hostile.png"), fullPage: true });
    await dashboard.goto(`${server.url}/profile?id=00000000-0000-0000-0000-00000000bad1`);
    await waitFor(async () => (await dashboard.textContent("#profile-h")) === HOSTILE_NAME, "the hostile profile");
    assert.equal(await field(dashboard, "#profile", "team"), HOSTILE_TEAM);
    assert.equal(await dashboard.title(), `${HOSTILE_NAME} · Distributed Brain`);
    assert.equal(await dashboard.locator("main img, main b").count(), 0);
    await volunteer.reload();
    await waitFor(async () => (await field(volunteer, "#credit-figures", "name")) === HOSTILE_NAME, "the page's own hostile name");
    assert.equal(await volunteer.locator("#credit img").count(), 0);
    for (const page of [dashboard, volunteer]) assert.equal(await page.evaluate(() => globalThis.__pwned), undefined);
    await dashboard.close();
  });

  test("a code moves the identity to another browser, once", T, async () => {
    await volunteer.click("#transfer summary");
    await volunteer.click("#transfer-issue");
    await waitFor(async () => /^[0-9A-Z]{5}-[0-9A-Z]{5}$/.test(await volunteer.textContent("#transfer-code")), "a code");
    const code = await volunteer.textContent("#transfer-code");
    const link = await volunteer.getAttribute("#transfer-link", "href");
    assert.equal(link, `${server.url}/#transfer=${code}`);

    // Another browser (its own storage) follows the link: the code fills the form, and
    // nothing moves until the person presses "Use it".
    const other = await browser.newContext();
    const page = await other.newPage();
    watch(page);
    await page.goto(link);
    await waitFor(async () => (await page.inputValue("#transfer-input")) === code, "the code from the link");
    assert.equal(new URL(page.url()).hash, "", "the code leaves the address bar");
    assert.equal(await page.evaluate(() => localStorage.getItem(`brain.token.${location.origin}`)), null);
    await page.click("#transfer-redeem");
    await waitFor(async () => /^Done/.test(await page.textContent("#transfer-status")), "the move");
    await waitFor(async () => (await snapshot(page)).creditId === me.id, "the same identity");
    assert.equal(await field(page, "#credit-figures", "all"), formatCredit(me.credit_all_time));
    // Pressing start there registers as that volunteer.
    await page.click("#start");
    await waitFor(async () => (await snapshot(page)).workerId === me.id, "registered as the moved identity");

    // The code worked once.
    const third = await browser.newContext();
    const late = await third.newPage();
    watch(late);
    await late.goto(link);
    await waitFor(async () => (await late.inputValue("#transfer-input")) === code, "the code again");
    await late.click("#transfer-redeem");
    await waitFor(async () => /^Not moved: no such code/.test(await late.textContent("#transfer-status")), "the refusal");
    assert.equal(await late.evaluate(() => localStorage.getItem(`brain.token.${location.origin}`)), null);
    await page.screenshot({ path: join(OUTPUT, "credit-moved.png"), fullPage: true });
    await other.close();
    await third.close();
    assert.deepEqual(pageErrors, []);
  });
});
