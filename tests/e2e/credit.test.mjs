// Credit (#15, docs/credit.md): earned only for verified tiles, taken back with them, kept
// with the worker's token; boards without liars or quarantined workers; names checked on the
// server; every query parameter bounded. Each worker here counts what the server accepted
// from it (2·m·k·n flops per accepted tile, from its own acks) and the server must agree.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import {
  api, fromBytes, referenceProduct, registered, runSql, startServer, startWorker, submitRandom, tempDir, toBytes,
  waitForJob,
} from "./helpers.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const flopsOf = (task) => 2 * task.m * task.k * task.n;
/** GFLOP as the API shows it, back to the exact integer the server counts. */
const flopsFromCredit = (gflop) => Math.round(gflop * 1e9);

/**
 * A worker that answers what it is told to, one step at a time, and keeps its own count of
 * the flops the server accepted from it. `plan(task, index)` says how to answer the index-th
 * task: "honest", "pair" (errors that cancel in pairs within a row: two random vectors miss
 * them a quarter of the time), "gross" (always caught), or "twice" (honest, sent twice).
 */
async function tracked(t, url, name, token) {
  const { socket, ack } = await registered(t, url, { name, token });
  const beat = setInterval(() => socket.emit("heartbeat"), ack.heartbeat_interval_ms);
  t.after(() => clearInterval(beat));
  const w = { socket, ack, id: ack.worker_id, token: ack.token, accepted: 0, tiles: 0, slipped: 0, refused: 0 };
  const assigned = [];
  const acks = new Map();
  socket.on("task_assigned", (task) => assigned.push(task));
  // Every ack of each task: a result sent twice is answered twice, the copy (refused at once)
  // often before the original (verified, then committed).
  socket.on("result_ack", (a) => acks.set(a.task_id, [...(acks.get(a.task_id) ?? []), a]));
  const until = async (what, ok) => {
    for (const end = Date.now() + 20000; !ok(); await sleep(5))
      if (Date.now() > end) throw new Error(`${name}: timed out waiting for ${what}`);
  };
  /** Takes `n` tasks and answers each as `how`; resolves with whether each was accepted. */
  w.round = async (n, how = "honest") => {
    const from = assigned.length;
    for (let i = 0; i < n; i++) socket.emit("request_task");
    await until(`${n} tasks`, () => assigned.length >= from + n);
    const tasks = assigned.slice(from, from + n);
    for (const task of tasks) {
      const c = referenceProduct(fromBytes(task.dtype, task.a), fromBytes(task.dtype, task.b), task.m, task.k, task.n);
      if (how === "pair") [c[0], c[1]] = [c[0] + 0.5, c[1] - 0.5];
      if (how === "gross") c[0] += 1e6;
      const result = { task_id: task.task_id, c: toBytes(task.dtype, c), compute_ms: 4 };
      socket.emit("task_result", result);
      if (how === "twice") socket.emit("task_result", result);
    }
    const answers = how === "twice" ? 2 : 1;
    await until("acks", () => tasks.every((x) => acks.get(x.task_id)?.length === answers));
    return tasks.map((task) => {
      const ok = acks.get(task.task_id).some((a) => a.accepted);
      w.refused += acks.get(task.task_id).filter((a) => !a.accepted).length;
      if (ok && how === "pair") w.slipped += flopsOf(task);
      else if (ok && how !== "gross") {
        w.accepted += flopsOf(task);
        w.tiles++;
      }
      return ok;
    });
  };
  return w;
}

const profile = async (url, id) => api(url, `/api/volunteers/${id}`);
const board = async (url, query = "") => (await api(url, `/api/leaderboard?per_page=100${query}`)).json;

test("credit follows verification exactly: liars, duplicates and audits earn nothing", async (t) => {
  const server = await startServer(t, { env: { LEASE_MS: "60000", MAX_LEASES_PER_ADDRESS: "1000" } });
  // 600 tiles of 2×2 with k = 3 (24 flops each).
  const job = await submitRandom(server.url, 40, 3, 60, 2, 41);

  // Patient cheaters: 32 honest tiles (past the 20 that bring their checks down to two
  // vectors), a lie that may slip through, then a lie that is always caught, which sets off
  // an audit of everything they delivered: a lie that slipped is taken back with its credit.
  const cheater = async (i) => {
    const w = await tracked(t, server.url, `patient-${i}`);
    for (let round = 0; round < 16; round++) assert.ok((await w.round(2)).every(Boolean));
    await w.round(1, "pair");
    assert.deepEqual(await w.round(1, "gross"), [false]);
    return w;
  };
  const doubler = async () => {
    const w = await tracked(t, server.url, "doubler");
    for (let round = 0; round < 10; round++) await w.round(2, "twice");
    return w;
  };
  const [cheaters, twice] = await Promise.all([Promise.all([0, 1, 2, 3, 4, 5].map(cheater)), doubler()]);
  assert.equal(twice.refused, 20, "every second copy of a result is refused");
  assert.equal(twice.tiles, 20, "and the first accepted");
  const slipped = cheaters.filter((w) => w.slipped > 0).length;
  t.diagnostic(`${slipped} of 6 paired-error tiles passed their first check`);

  // A liar that never delivers a right tile: refused, quarantined, never credited.
  const liar = await startWorker(t, server.url, { name: "liar", behaviour: { lie: "zeros" } });
  for (const end = Date.now() + 10000; !liar.stats.quarantined; await sleep(20))
    assert.ok(Date.now() < end, "the liar is quarantined");

  // The audits are done once the job counts only what survived them.
  const delivered = [...cheaters, twice].reduce((n, w) => n + w.tiles, 0);
  for (const end = Date.now() + 10000; ; await sleep(50)) {
    const { tasks_done } = (await api(server.url, `/api/jobs/${job.id}`)).json;
    if (tasks_done === delivered) break;
    assert.ok(Date.now() < end, `the job counts ${tasks_done} tiles, not ${delivered}`);
  }
  const finisher = await tracked(t, server.url, "finisher");
  // In rounds as large as its lease allowance (two, one more per tile verified in a row).
  for (let left; (left = 600 - (await api(server.url, `/api/jobs/${job.id}`)).json.tasks_done) > 0; )
    await finisher.round(Math.min(left, 2 + finisher.tiles, 8));
  await waitForJob(server.url, job.id);

  // Each volunteer's credit is what it got verified, nothing more: slipped lies taken back.
  for (const w of [...cheaters, twice, finisher]) {
    const { status, json: p } = await profile(server.url, w.id);
    assert.equal(status, 200);
    assert.equal(flopsFromCredit(p.credit_all_time), w.accepted, `${w.id}: all time`);
    assert.equal(flopsFromCredit(p.credit_today), w.accepted, "today");
    assert.equal(flopsFromCredit(p.credit_24h), w.accepted, "the last 24 hours, audits withdrawn");
    assert.equal(flopsFromCredit(p.credit_week), w.accepted, "this week");
    assert.equal(p.tiles, w.tiles);
    assert.equal(p.history.length, 30);
    assert.equal(flopsFromCredit(p.history.at(-1).credit), w.accepted, "today is the last day of the history");
    assert.ok(p.compute_s > 0);
    assert.equal(p.anonymous, true);
    assert.match(p.name, /^volunteer #[0-9a-f]{8}$/);
  }
  const total = [...cheaters, twice, finisher].reduce((n, w) => n + w.accepted, 0);
  assert.equal(total, 600 * 24, "the crowd's credit is the job's flops, exactly");

  // The boards: every credited volunteer ranked by credit, the liar nowhere. All of it was
  // earned just now, so the last 24 hours' board is the all-time one, withdrawals included.
  const allTime = await board(server.url, "&period=all");
  const last24h = await board(server.url, "&period=24h");
  assert.deepEqual(last24h.entries, allTime.entries);
  for (const w of [...cheaters, twice, finisher])
    assert.equal(flopsFromCredit(last24h.entries.find((e) => e.id === w.id).credit), w.accepted, `${w.id}: 24h board`);
  for (const period of ["all", "24h"]) {
    const b = await board(server.url, `&period=${period}`);
    assert.equal(b.total, 8);
    assert.deepEqual(b.entries.map((e) => e.rank), [1, 2, 3, 4, 5, 6, 7, 8]);
    const credits = b.entries.map((e) => e.credit);
    assert.deepEqual(credits, [...credits].sort((x, y) => y - x));
    assert.ok(!b.entries.some((e) => e.id === liar.workerId), "a liar never ranks");
    for (const e of b.entries) assert.deepEqual(Object.keys(e).sort(), ["anonymous", "credit", "id", "members", "name", "rank", "team", "tiles"]);
  }
  assert.equal((await profile(server.url, liar.workerId)).status, 404, "a quarantined volunteer has no public profile");
  const me = (await profile(server.url, finisher.id)).json;
  const top = (await board(server.url)).entries.find((e) => e.id === finisher.id);
  assert.equal(me.rank, top.rank, "a profile's rank is its place on the board");
});

test("a volunteer that turns liar vanishes from the boards; one that comes back keeps its credit", async (t) => {
  const server = await startServer(t, { env: { LEASE_MS: "60000", MAX_LEASES_PER_ADDRESS: "1000" } });
  await submitRandom(server.url, 20, 4, 20, 2, 7); // 100 tiles

  const turncoat = await tracked(t, server.url, "turncoat");
  await turncoat.round(2);
  const loyal = await tracked(t, server.url, "loyal");
  await loyal.round(2);
  assert.equal((await board(server.url)).total, 2);
  // Three caught lies quarantine it: it vanishes though it had earned credit.
  for (let i = 0; i < 3; i++) await turncoat.round(1, "gross");
  for (const end = Date.now() + 5000; ; await sleep(20)) {
    const b = await board(server.url);
    if (b.total === 1) {
      assert.deepEqual(b.entries.map((e) => e.id), [loyal.id]);
      break;
    }
    assert.ok(Date.now() < end, "the quarantined volunteer is still on the board");
  }
  assert.equal((await board(server.url, "&period=24h")).total, 1);
  assert.equal((await profile(server.url, turncoat.id)).status, 404);

  // The loyal volunteer closes the tab and comes back with its token: same identity, same
  // credit, and what it does next adds to it.
  const before = (await profile(server.url, loyal.id)).json;
  loyal.socket.close();
  const back = await tracked(t, server.url, "loyal", loyal.token);
  assert.equal(back.id, loyal.id);
  assert.equal((await profile(server.url, loyal.id)).json.credit_all_time, before.credit_all_time);
  await back.round(2);
  assert.equal(flopsFromCredit((await profile(server.url, loyal.id)).json.credit_all_time), loyal.accepted + back.accepted);
});

test("the 24h boards forget an hour 24 hours on, and keep the all-time credit", async (t) => {
  const dbPath = join(tempDir(t), "brain.db");
  let server = await startServer(t, { dbPath, env: { LEASE_MS: "60000" } });
  await submitRandom(server.url, 4, 4, 4, 2, 3); // 4 tiles
  const w = await tracked(t, server.url, "earner");
  await w.round(2);
  await api(server.url, "/api/me", { method: "PUT", body: { team: "Hourly" }, headers: bearer(w.token) });
  await w.round(2);
  const before = (await profile(server.url, w.id)).json;
  assert.equal(flopsFromCredit(before.credit_24h), w.accepted);
  assert.equal((await board(server.url, "&board=teams&period=24h")).total, 1);

  // 25 hours pass while the server is down: the credit's hours and the last sweep move back.
  await server.kill();
  await runSql(dbPath, `
    UPDATE volunteer_credit_hourly SET hour = hour - 25;
    UPDATE team_credit_hourly SET hour = hour - 25;
    UPDATE tasks SET credit_hour = credit_hour - 25 WHERE credit_hour IS NOT NULL;
    UPDATE credit_window SET swept_through = swept_through - 25;`);
  server = await startServer(t, { dbPath });
  // The sweep at start-up took those hours out of the window.
  const after = (await profile(server.url, w.id)).json;
  assert.equal(after.credit_24h, 0);
  assert.equal(after.credit_all_time, before.credit_all_time);
  for (const b of ["volunteers", "teams"]) {
    assert.equal((await board(server.url, `&board=${b}&period=24h`)).total, 0, `${b}: 24h`);
    assert.equal((await board(server.url, `&board=${b}&period=all`)).total, 1, `${b}: all time`);
  }
});

test("names and teams are opt-in, checked on the server, and boards and the export show them", async (t) => {
  const server = await startServer(t, { env: { LEASE_MS: "60000", MAX_LEASES_PER_ADDRESS: "1000" } });
  await submitRandom(server.url, 20, 4, 20, 2, 9);
  const ada = await tracked(t, server.url, "a");
  await ada.round(2);
  const bob = await tracked(t, server.url, "b");
  await bob.round(1);
  const put = (token, body) =>
    api(server.url, "/api/me", { method: "PUT", body, headers: token ? { authorization: `Bearer ${token}` } : {} });

  // Hostile names: refused with the reason, nothing stored.
  const hostile = [
    ["<img src=x onerror=alert(1)>", /only letters, digits/],
    ["a\u202Egnp.exe", /bidirectional/],
    ["x".repeat(10240), /longer than 32/],
    ["bell\u0007", /control character/],
    ["rocket 🚀", /only letters, digits/],
    ["   ", /empty/],
  ];
  for (const [name, reason] of hostile) {
    const res = await put(ada.token, { name });
    assert.equal(res.status, 400, JSON.stringify(name));
    assert.match(res.json.error, reason);
    const team = await put(ada.token, { name: "ok", team: name });
    assert.equal(team.status, 400);
    assert.match(team.json.error, /^team: /);
  }
  assert.equal((await profile(server.url, ada.id)).json.anonymous, true, "nothing stored");
  assert.equal((await put(undefined, { name: "x" })).status, 401);
  assert.equal((await put("f".repeat(48), { name: "x" })).status, 401, "a token never issued");
  assert.equal((await put(ada.token, "{not json")).status, 400);

  // Accepted: trimmed; a team is created by the first to join its name, in any case.
  const set = await put(ada.token, { name: "  Ada Lovelace ", team: "Analytical Engines" });
  assert.equal(set.status, 200, set.text);
  assert.equal(set.json.name, "Ada Lovelace");
  assert.equal(set.json.team, "Analytical Engines");
  assert.equal((await put(bob.token, { name: "Bob", team: "analytical ENGINES" })).json.team, "Analytical Engines");
  // Credit earned while in the team counts for the team.
  await ada.round(2);
  await bob.round(1);
  const teams = await board(server.url, "&board=teams");
  assert.equal(teams.total, 1);
  assert.equal(teams.entries[0].name, "Analytical Engines");
  assert.equal(teams.entries[0].members, 2);
  const sinceJoining = 3 * 2 * 2 * 4 * 2; // three tiles of 2×2, k = 4
  assert.equal(flopsFromCredit(teams.entries[0].credit), sinceJoining);
  assert.equal((await board(server.url, "&board=teams&period=24h")).total, 1);
  const vols = await board(server.url);
  assert.deepEqual(vols.entries.map((e) => [e.name, e.team, e.anonymous]), [["Ada Lovelace", "Analytical Engines", false], ["Bob", "Analytical Engines", false]]);
  assert.ok(!JSON.stringify(vols).match(/127\.0\.0\.1|node|user_agent|address/i), "no address or user agent");

  // Pagination: bounded, and unknown values refused with the reason.
  const page2 = (await api(server.url, "/api/leaderboard?per_page=1&page=2")).json;
  assert.deepEqual([page2.entries.length, page2.entries[0].rank, page2.total], [1, 2, 2]);
  assert.equal((await api(server.url, "/api/leaderboard?page=3&per_page=1")).json.entries.length, 0);
  for (const [query, reason] of [
    ["per_page=101", /per_page must be a whole number from 1 to 100/],
    ["per_page=0", /per_page/],
    ["page=0", /page must be/],
    ["page=10001", /from 1 to 10000/],
    ["page=99999999999999999999", /page must be/],
    ["page=1.5", /page must be/],
    ["board=bots", /board must be volunteers or teams/],
    ["period=week", /period must be 24h or all/],
  ]) {
    const res = await api(server.url, `/api/leaderboard?${query}`);
    assert.equal(res.status, 400, query);
    assert.match(res.json.error, reason);
  }
  assert.equal((await profile(server.url, "no-such-volunteer")).status, 404);

  // The export: gzipped JSON with every listed volunteer and team, the same bytes all day.
  const res = await api(server.url, "/api/stats/export", { raw: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/gzip");
  const gz = Buffer.from(await res.arrayBuffer());
  const dump = JSON.parse(gunzipSync(gz).toString("utf8"));
  assert.equal(dump.unit, "GFLOP");
  assert.equal(dump.gflop_per_cobblestone, 432);
  assert.deepEqual(dump.volunteers.map((v) => v.name).sort(), ["Ada Lovelace", "Bob"]);
  assert.deepEqual(dump.teams.map((x) => [x.name, x.members]), [["Analytical Engines", 2]]);
  await ada.round(2);
  const again = Buffer.from(await (await api(server.url, "/api/stats/export", { raw: true })).arrayBuffer());
  assert.ok(again.equals(gz), "made once per UTC day");
});

// ---- A volunteer's own profile, and moving an identity to another browser -----------------

const bearer = (token) => (token === undefined ? {} : { authorization: `Bearer ${token}` });
const me = (url, token) => api(url, "/api/me", { headers: bearer(token) });
const issue = (url, token) => api(url, "/api/me/transfer", { method: "POST", headers: bearer(token) });
const redeem = (url, code) => api(url, "/api/transfer", { method: "POST", body: { code } });
/** POSTs `body` with node:http; resolves with `{ status }`, or `{ error }` when the exchange breaks. */
function postRaw(url, path, body) {
  return new Promise((resolve) => {
    const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
    const req = http.request(url + path, { method: "POST", headers, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode }));
      res.on("error", (e) => resolve({ status: res.statusCode, error: e.code }));
    });
    req.on("error", (e) => resolve({ error: e.code }));
    req.end(body);
  });
}
const CODE = /^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$/;
const NO_SUCH_CODE = "no such code: it may have expired (codes last 10 minutes) or been used";

test("GET /api/me: the caller's own profile from its first visit, 401 without its token", async (t) => {
  const server = await startServer(t);
  const { ack } = await registered(t, server.url, { name: "new" });

  const { status, json: p } = await me(server.url, ack.token);
  assert.equal(status, 200);
  assert.equal(p.id, ack.worker_id);
  assert.equal(p.rank, null, "no rank before any credit");
  assert.deepEqual([p.credit_all_time, p.credit_today, p.credit_week, p.tiles], [0, 0, 0, 0]);
  assert.equal(p.history.length, 30);
  assert.equal(p.anonymous, true);
  assert.deepEqual(Object.keys(p).sort(), Object.keys((await profile(server.url, ack.worker_id)).json).sort(), "the public profile's shape");

  for (const headers of [{}, bearer("f".repeat(48)), bearer("short"), { authorization: ack.token }, { authorization: `Basic ${ack.token}` }]) {
    const res = await api(server.url, "/api/me", { headers });
    assert.equal(res.status, 401, JSON.stringify(headers));
    assert.match(res.json.error, /worker token/);
  }
  const put = await api(server.url, "/api/me", { method: "PUT", body: { name: "Grace" }, headers: bearer(ack.token) });
  assert.equal(put.status, 200, put.text);
  assert.equal((await me(server.url, ack.token)).json.name, "Grace");
});

test("a transfer code moves the identity: the same token and credit, once, the latest code only", async (t) => {
  const server = await startServer(t);
  const job = await submitRandom(server.url, 4, 3, 4, 2, 5); // 4 tiles
  const w = await startWorker(t, server.url, { name: "laptop" });
  await waitForJob(server.url, job.id);
  const credited = (await me(server.url, w.token)).json;
  assert.ok(credited.credit_all_time > 0);

  const res = await issue(server.url, w.token);
  assert.equal(res.status, 201, res.text);
  assert.match(res.json.code, CODE);
  assert.equal(res.json.expires_in_s, 600);
  assert.ok(Math.abs(res.json.expires_at - (Date.now() + 600_000)) < 5000, "expires in 10 minutes");

  // Typed on the phone: lower case, a space for the dash.
  const typed = res.json.code.toLowerCase().replace("-", " ");
  const raw = await fetch(`${server.url}/api/transfer`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ code: typed }),
  });
  assert.equal(raw.status, 200);
  assert.equal(raw.headers.get("cache-control"), "no-store", "a token is not cached");
  const moved = await raw.json();
  assert.deepEqual(moved, { token: w.token, worker_id: w.workerId });

  // The second browser is the same volunteer: same worker, same credit.
  const phone = await registered(t, server.url, { name: "phone", token: moved.token });
  assert.equal(phone.ack.worker_id, w.workerId);
  assert.equal((await me(server.url, moved.token)).json.credit_all_time, credited.credit_all_time);

  // Single use.
  const again = await redeem(server.url, res.json.code);
  assert.equal(again.status, 404);
  assert.equal(again.json.error, NO_SUCH_CODE);

  // A new code replaces the one before it.
  const first = (await issue(server.url, w.token)).json.code;
  const second = (await issue(server.url, moved.token)).json.code;
  assert.notEqual(first, second);
  assert.equal((await redeem(server.url, first)).status, 404, "replaced");
  assert.equal((await redeem(server.url, second)).json.token, w.token);

  // Two browsers racing for one code: exactly one gets it.
  const raced = (await issue(server.url, w.token)).json.code;
  const answers = await Promise.all(Array.from({ length: 8 }, () => redeem(server.url, raced)));
  assert.deepEqual(answers.map((a) => a.status).sort(), [200, 404, 404, 404, 404, 404, 404, 404]);
  assert.equal(answers.find((a) => a.status === 200).json.token, w.token);
});

test("malformed transfer codes are refused with the reason: 400, 413 past the body limit, never 5xx", async (t) => {
  const server = await startServer(t);
  for (const [body, reason] of [
    [{ code: "ABCDE-FGHJ" }, /10 characters .*not 9/],
    [{ code: "ABCDE-FGHJKM" }, /not 11/],
    [{ code: "ABCDE-FGHJU" }, /'U' is not in a transfer code/],
    [{ code: "ABCDE_FGHJK" }, /'_' is not in a transfer code/],
    [{ code: "<script>" }, /not in a transfer code/],
    [{ code: "A".repeat(500) }, /far longer/],
    [{ code: "A".repeat(1_000_000) }, /far longer/], // looked at no further than 64 bytes
    [{ code: 1234567890 }, /code/],
    [{}, /code/],
    ["{not json", /./],
    ["null", /./],
  ]) {
    const res = await api(server.url, "/api/transfer", { method: "POST", body });
    assert.equal(res.status, 400, `${JSON.stringify(body).slice(0, 40)}: ${res.text}`);
    assert.match(res.json.error, reason);
  }
  // Well formed, never issued.
  const unknown = await redeem(server.url, "00000-00000");
  assert.equal(unknown.status, 404);
  assert.equal(unknown.json.error, NO_SUCH_CODE);
  // A body past the server's limit (axum's 2 MB) is refused as soon as the limit is passed:
  // 413, which a client still sending hears while the connection's buffers take the rest
  // (100 kB here). The rest of 10 MB does not fit: the connection closes under the sender, as
  // any refused upload over 1 MiB is cut (attacks.test.mjs, 13), and the server goes on serving.
  const over = await api(server.url, "/api/transfer", { method: "POST", body: JSON.stringify({ code: "A".repeat(2_200_000) }) });
  assert.equal(over.status, 413, over.text);
  assert.match(over.json.error, /too large/);
  const huge = await postRaw(server.url, "/api/transfer", JSON.stringify({ code: "A".repeat(10 << 20) }));
  assert.ok(huge.status === 413 || ["EPIPE", "ECONNRESET"].includes(huge.error), JSON.stringify(huge));
  t.diagnostic(`10 MB body: ${huge.status ?? huge.error}`);
  assert.equal((await issue(server.url, undefined)).status, 401);
  assert.equal((await issue(server.url, "f".repeat(48))).status, 401);
  assert.equal((await api(server.url, "/health")).status, 200, "the server is still up");
});

test("a quarantined volunteer has no profile of its own and can neither issue nor redeem a code", async (t) => {
  const server = await startServer(t);
  // The liar registers before there is work, takes a code, then lies until quarantined.
  const liar = await startWorker(t, server.url, { name: "liar", behaviour: { lie: "zeros" } });
  const code = (await issue(server.url, liar.token)).json.code;
  assert.match(code, CODE);
  await submitRandom(server.url, 8, 3, 8, 2, 11); // 16 tiles
  for (const end = Date.now() + 10000; !liar.stats.quarantined; await sleep(20))
    assert.ok(Date.now() < end, "the liar is quarantined");

  for (const res of [
    await me(server.url, liar.token),
    await issue(server.url, liar.token),
    await api(server.url, "/api/me", { method: "PUT", body: { name: "Honest" }, headers: bearer(liar.token) }),
    await redeem(server.url, code),
  ]) {
    assert.equal(res.status, 403, res.text);
    assert.match(res.json.error, /quarantined: \d+ results failed verification.*earns nothing and is not listed/);
  }
  assert.equal((await redeem(server.url, code)).status, 404, "the code was used up all the same");
});

test("CORS: a volunteer page on another allowed origin may PUT /api/me", async (t) => {
  const origin = "https://volunteers.example.org";
  const server = await startServer(t, { env: { ALLOWED_ORIGINS: origin } });
  const preflight = await fetch(`${server.url}/api/me`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": "PUT", "access-control-request-headers": "authorization, content-type" },
  });
  assert.ok(preflight.status < 300, `${preflight.status}`);
  assert.equal(preflight.headers.get("access-control-allow-origin"), origin);
  assert.match(preflight.headers.get("access-control-allow-methods"), /\bPUT\b/);
  const elsewhere = await fetch(`${server.url}/api/me`, {
    method: "OPTIONS",
    headers: { origin: "https://evil.example.com", "access-control-request-method": "PUT" },
  });
  assert.equal(elsewhere.headers.get("access-control-allow-origin"), null);
});

test("no user agent is public: GET /api/workers shows it only to an operator with the API token", async (t) => {
  const open = await startServer(t);
  await registered(t, open.url, { name: "page", user_agent: "Mozilla/5.0 (X11; Linux) Secret/1.0" });
  const shown = (await api(open.url, "/api/workers")).json;
  assert.equal(shown.length, 1);
  assert.equal(shown[0].user_agent, undefined, "a server without a token has no operators to show it to");
  assert.ok(!JSON.stringify(shown).includes("Secret/1.0"));

  const guarded = await startServer(t, { env: { API_TOKEN: "op-token-123" } });
  await registered(t, guarded.url, { name: "page", user_agent: "Mozilla/5.0 (X11; Linux) Secret/1.0" });
  assert.equal((await api(guarded.url, "/api/workers")).json[0].user_agent, undefined);
  const wrong = await api(guarded.url, "/api/workers", { headers: { authorization: "Bearer nope" } });
  assert.equal(wrong.json[0].user_agent, undefined);
  const operator = await api(guarded.url, "/api/workers", { headers: { authorization: "Bearer op-token-123" } });
  assert.equal(operator.json[0].user_agent, "Mozilla/5.0 (X11; Linux) Secret/1.0");
});
