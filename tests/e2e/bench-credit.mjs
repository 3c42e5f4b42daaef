#!/usr/bin/env node
// The credit boards at scale (#15): a fresh SQLite database seeded with VOLUNTEERS volunteers
// (100,000), TILES credited tiles (10 million) spread over them with a long tail, 1,000 teams,
// 30 days of daily aggregates, the rolling window's hourly and 24h aggregates (every other
// volunteer earned in the last hour), then the release server's answers timed over HTTP: the
// boards (volunteers and teams, all time and the last 24 hours, first page and last), and
// profiles (the top
// volunteer and the last-ranked one, whose rank counts everyone ahead). Beside them, as the
// anchor measured in the same run, the query the aggregate tables exist to avoid: summing the
// credited tiles per volunteer for one page of the board. Prints figures; asserts no timing.
//
//   BRAIN_SERVER_BIN=…/target/release/brain-server node bench-credit.mjs
//   VOLUNTEERS=… TILES=… ROUNDS=… (defaults 100000, 10000000, 30)
//
// The seed is written by SQLite itself (python3's sqlite3 module running one recursive CTE per
// table, in the schema the server's own migrations made), so it takes seconds, not the hours
// a million results through the protocol would.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { startServer, tempDir } from "./helpers.mjs";

const VOLUNTEERS = Number(process.env.VOLUNTEERS ?? 100_000);
const TILES = Number(process.env.TILES ?? 10_000_000);
const ROUNDS = Number(process.env.ROUNDS ?? 30);
const TEAMS = 1_000;
const DAYS = 30;

const cleanups = [];
const t = { after: (fn) => cleanups.push(fn) };

/** Runs `script` in python3 with the database path as argv[1]; returns its stdout. */
function python(script, dbPath) {
  const run = spawnSync("python3", ["-c", script, dbPath], { encoding: "utf8", maxBuffer: 1 << 20 });
  if (run.status !== 0) throw new Error(`python3: ${run.stderr || run.error}`);
  return run.stdout.trim();
}

// Credit per volunteer follows a long tail: volunteer n (0-based) gets a share ∝ 1/(n+1)^0.8,
// at least one tile; tiles are 256×256 at k = 4096 (0.537 GFLOP each).
const SEED = `
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = OFF")
V, T, TEAMS, DAYS = ${VOLUNTEERS}, ${TILES}, ${TEAMS}, ${DAYS}
FLOPS = 2 * 256 * 256 * 4096
now = int(time.time() * 1000)
today = now // 86400000
hour = now // 3600000
start = time.time()
with db:
    db.execute("CREATE TEMP TABLE shares (n INTEGER PRIMARY KEY, w REAL)")
    db.execute("INSERT INTO shares WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < ?) "
               "SELECT n, 1.0 / pow(n + 1, 0.8) FROM s", (V,))
    total = db.execute("SELECT SUM(w) FROM shares").fetchone()[0]
    db.execute("CREATE TEMP TABLE vols (n INTEGER PRIMARY KEY, id TEXT, tiles INTEGER, team TEXT)")
    db.execute("INSERT INTO vols SELECT n, printf('vol-%06d', n), MAX(1, CAST(w / ? * ? AS INTEGER)), "
               "CASE WHEN n % 2 = 0 THEN printf('team-%04d', (n / 2) % ?) END FROM shares", (total, T, TEAMS))
    db.execute("INSERT INTO teams (id, name, name_key, created_at) WITH RECURSIVE s(n) AS "
               "(SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < ?) "
               "SELECT printf('team-%04d', n), printf('Team %d', n), printf('team %d', n), ? FROM s", (TEAMS, now))
    db.execute("INSERT INTO workers (id, name, first_seen, last_seen, display_name, team_id) "
               "SELECT id, 'bench', ?, ?, CASE WHEN n % 3 = 0 THEN printf('Volunteer %d', n) END, team FROM vols", (now, now))
    db.execute("INSERT INTO volunteer_credit (worker_id, flops, tiles, compute_ms) "
               "SELECT id, tiles * ?, tiles, tiles * 20 FROM vols", (FLOPS,))
    # Each volunteer's tiles over the last DAYS days, a share a day; today's for every other one.
    db.execute("INSERT INTO volunteer_credit_daily (worker_id, day, flops, tiles, compute_ms) "
               "WITH RECURSIVE d(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM d WHERE k + 1 < ?) "
               "SELECT id, ? - k, (tiles / ? + 1) * ?, tiles / ? + 1, (tiles / ? + 1) * 20 FROM vols, d "
               "WHERE k > 0 OR n % 2 = 0", (DAYS, today, DAYS, FLOPS, DAYS, DAYS))
    db.execute("INSERT INTO team_credit (team_id, flops, tiles, compute_ms) "
               "SELECT team, SUM(tiles) * ?, SUM(tiles), SUM(tiles) * 20 FROM vols WHERE team IS NOT NULL GROUP BY team", (FLOPS,))
    db.execute("INSERT INTO team_credit_daily (team_id, day, flops, tiles, compute_ms) "
               "SELECT v.team, d.day, SUM(d.flops), SUM(d.tiles), SUM(d.compute_ms) FROM volunteer_credit_daily d "
               "JOIN vols v ON v.id = d.worker_id WHERE v.team IS NOT NULL GROUP BY v.team, d.day")
    # The rolling window: the volunteers with credit today earned it in the current hour, so
    # the server's sweep at start-up leaves it as seeded.
    db.execute("INSERT INTO volunteer_credit_hourly (worker_id, hour, flops, tiles, compute_ms) "
               "SELECT worker_id, ?, flops, tiles, compute_ms FROM volunteer_credit_daily WHERE day = ?", (hour, today))
    db.execute("INSERT INTO volunteer_credit_24h (worker_id, flops, tiles, compute_ms) "
               "SELECT worker_id, flops, tiles, compute_ms FROM volunteer_credit_hourly")
    db.execute("INSERT INTO team_credit_hourly (team_id, hour, flops, tiles, compute_ms) "
               "SELECT team_id, ?, flops, tiles, compute_ms FROM team_credit_daily WHERE day = ?", (hour, today))
    db.execute("INSERT INTO team_credit_24h (team_id, flops, tiles, compute_ms) "
               "SELECT team_id, flops, tiles, compute_ms FROM team_credit_hourly")
    # The credited tiles themselves, as the commit leaves them: one done task each.
    db.execute("INSERT INTO jobs (id, name, status, m, k, n, dtype, tile, tasks_total, tasks_done, created_at, finished_at) "
               "VALUES ('bench-job', 'bench', 'done', ?, 4096, 256, 'f32', 256, ?, ?, ?, ?)", (T * 256, T, T, now, now))
    db.execute("CREATE TEMP TABLE ends AS SELECT id, SUM(tiles) OVER (ORDER BY n) AS upto FROM vols")
    db.execute("CREATE INDEX temp.ends_upto ON ends (upto)")
    db.execute("INSERT INTO tasks (id, job_id, tile_row, tile_col, state, attempts, compute_ms, completed_by, "
               "updated_at, credit_flops, credit_ms, credit_day, credit_hour) "
               "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < (SELECT MAX(upto) FROM ends)) "
               "SELECT i + 1, 'bench-job', i, 0, 'done', 1, 20.0, "
               "(SELECT id FROM ends WHERE upto > i ORDER BY upto LIMIT 1), ?, ?, 20, ?, ? FROM s", (now, FLOPS, today, hour))
tiles = db.execute("SELECT COUNT(*) FROM tasks WHERE credit_flops IS NOT NULL").fetchone()[0]
vols = db.execute("SELECT COUNT(*) FROM volunteer_credit").fetchone()[0]
daily = db.execute("SELECT COUNT(*) FROM volunteer_credit_daily").fetchone()[0]
window = db.execute("SELECT COUNT(*) FROM volunteer_credit_24h").fetchone()[0]
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(f"{vols} {tiles} {daily} {window} {time.time() - start:.1f}")
`;

// The anchor: one page of the all-time board summed from the credited tiles, as a server
// without the aggregates would answer it.
const ANCHOR = `
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
times = []
for _ in range(3):
    t = time.perf_counter()
    db.execute("SELECT completed_by, SUM(credit_flops) AS f FROM tasks WHERE credit_flops IS NOT NULL "
               "GROUP BY completed_by ORDER BY f DESC LIMIT 25").fetchall()
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(f"{times[1]:.0f}")
`;

async function timed(url, rounds) {
  const ms = [];
  let body;
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const res = await fetch(url);
    body = await res.json();
    ms.push(performance.now() - t0);
    if (!res.ok) throw new Error(`${url}: ${res.status} ${JSON.stringify(body)}`);
  }
  ms.sort((a, b) => a - b);
  return { p50: ms[Math.floor(ms.length / 2)], p99: ms[Math.min(ms.length - 1, Math.floor(ms.length * 0.99))], body };
}

try {
  const dir = tempDir(t);
  const dbPath = join(dir, "brain.db");
  // The server makes the schema; it is stopped while SQLite seeds the file.
  const first = await startServer(t, { dbPath });
  await first.kill();
  const [vols, tiles, daily, window, seedS] = python(SEED, dbPath).split(" ");
  console.log(`seeded ${vols} volunteers, ${tiles} credited tiles, ${daily} volunteer-days, ${window} volunteers in the 24h window, ${TEAMS} teams in ${seedS} s`);
  const server = await startServer(t, { dbPath });
  const base = `${server.url}/api`;
  const last = Math.ceil(VOLUNTEERS / 100);
  const last24h = Math.ceil(Number(window) / 100);
  const cases = [
    ["volunteers, all time, first page (25)", `${base}/leaderboard?board=volunteers&period=all`],
    [`volunteers, all time, last page (${last}, 100 a page)`, `${base}/leaderboard?board=volunteers&period=all&page=${last}&per_page=100`],
    ["volunteers, last 24 h, first page", `${base}/leaderboard?board=volunteers&period=24h`],
    [`volunteers, last 24 h, last page (${last24h}, 100 a page)`, `${base}/leaderboard?board=volunteers&period=24h&page=${last24h}&per_page=100`],
    ["teams, all time, first page", `${base}/leaderboard?board=teams&period=all`],
    ["teams, last 24 h, first page", `${base}/leaderboard?board=teams&period=24h`],
    ["profile of the top volunteer", `${base}/volunteers/vol-000000`],
    ["profile of the last-ranked volunteer", `${base}/volunteers/vol-${String(VOLUNTEERS - 1).padStart(6, "0")}`],
  ];
  for (const [label, url] of cases) {
    await timed(url, 3); // warm the page cache and the statements
    const { p50, p99 } = await timed(url, ROUNDS);
    console.log(`${label}: median ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms over ${ROUNDS} requests`);
  }
  const anchor = python(ANCHOR, dbPath);
  console.log(`anchor, same database: one board page summed from the ${tiles} credited tiles (no aggregate): ${anchor} ms`);
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
