// Private PostgreSQL instances for tests: a new cluster in a temporary folder, listening on
// 127.0.0.1 at an ephemeral port, tuned for speed over durability, and gone when the test
// ends or, failing that, when the Node process exits. Driven by PostgreSQL's own programs
// (initdb, postgres, psql; scripts/services.sh installs them), so no npm dependency: both the
// e2e and the browser test packages can import it.
//
// initdb takes seconds, so a suite starts one instance and gives each test a database of its
// own on it (`createDatabase`).
import { execFile, execFileSync, spawn } from "node:child_process";
import { chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, untilReady } from "./ports.mjs";

/** The superuser initdb creates, and the database every instance starts with. */
const USER = "brain";

/** Durability a throwaway cluster does not need, traded for speed. */
const TEST_SETTINGS = {
  fsync: "off",
  synchronous_commit: "off",
  full_page_writes: "off",
  // A suite's servers share one instance, each with its own pool.
  max_connections: "200",
};

/** Starts retried when another process took the probed port before PostgreSQL bound it. */
const PORT_ATTEMPTS = 5;

/** Servers not yet stopped, for the exit handler below. */
const live = new Set();

// A test that crashes or forgets to stop its instance must not leave a postmaster behind: it
// survives the Node process, and nothing else would ever stop it. Only synchronous work runs
// in an 'exit' handler.
process.on("exit", () => {
  for (const server of live) killNow(server);
});

/**
 * Starts a new PostgreSQL cluster and resolves to `{ url, port, dir, pid, stop() }` once it
 * accepts connections: `url` is `postgres://brain@127.0.0.1:PORT/brain` (trust auth, no
 * password), `dir` the temporary folder holding the cluster (`dir/data`), its log
 * (`dir/postgres.log`) and its unix socket, `pid` the postmaster's (the load harness sums
 * the CPU of it and its children). `stop()` shuts it down and removes the folder;
 * it is idempotent and registered with `t.after` when a node:test context `t` is given.
 * `settings` adds or overrides server settings (`{ max_connections: 300 }`). Rejects with
 * the server's log when it does not start within `startMs`.
 */
export async function startPostgres({ t, settings = {}, startMs = 60000 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "brain-pg-"));
  const data = join(dir, "data");
  const log = join(dir, "postgres.log");
  let server = null;
  let stopping;
  const stop = () =>
    (stopping ??= (async () => {
      if (server) await halt(server);
      rmSync(dir, { recursive: true, force: true });
    })());
  try {
    // PostgreSQL refuses to run as root; the cluster then belongs to the postgres user.
    if (isRoot()) chownSync(dir, postgresUser().uid, postgresUser().gid);
    await initdb(dir, data, startMs);
    const settingArgs = Object.entries({ ...TEST_SETTINGS, ...settings }).flatMap(([k, v]) => ["-c", `${k}=${v}`]);
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      server = spawnPostmaster(dir, log, [
        "-D", data,
        "-p", String(port),
        "-k", dir,
        "-c", "listen_addresses=127.0.0.1",
        ...settingArgs,
      ]);
      const outcome = await ready(server, data, startMs);
      if (outcome === "ready") {
        const url = `postgres://${USER}@127.0.0.1:${port}/${USER}`;
        const pg = { url, port, dir, pid: server.proc.pid, stop };
        t?.after(stop);
        await createDatabase(pg, USER);
        return pg;
      }
      await halt(server);
      const serverLog = readFileSync(log, "utf8");
      if (outcome === "exited" && attempt < PORT_ATTEMPTS && /could not bind|address already in use/i.test(serverLog)) {
        continue;
      }
      const why =
        outcome === "timeout"
          ? `was not ready within ${startMs} ms`
          : `exited while starting${server.error ? ` (${server.error.message})` : ""}`;
      throw new Error(`PostgreSQL on 127.0.0.1:${port} ${why} (attempt ${attempt}); its log:\n${serverLog.trim()}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * Creates the cluster in `data`: trust auth, `brain` its superuser, no fsync of its files.
 * initdb runs in a process group of its own, so that a timeout kills the bootstrap servers it
 * starts along with it.
 */
function initdb(dir, data, ms) {
  const args = ["-D", data, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"];
  const options = { ...asPostgres(dir), detached: true, stdio: ["ignore", "pipe", "pipe"] };
  const proc = spawn(postgresBin("initdb"), args, options);
  let output = "";
  proc.stdout.on("data", (d) => (output += d));
  proc.stderr.on("data", (d) => (output += d));
  return new Promise((res, rej) => {
    const timer = setTimeout(() => {
      signal(-proc.pid, "SIGKILL");
      rej(new Error(`initdb timed out after ${ms} ms:\n${output.trim()}`));
    }, ms);
    proc.once("error", (e) => {
      clearTimeout(timer);
      rej(new Error(`initdb could not run in ${dir}: ${e.message}`));
    });
    proc.once("close", (code, sig) => {
      clearTimeout(timer);
      if (code === 0) res();
      else rej(new Error(`initdb failed (${code ?? sig}):\n${output.trim()}`));
    });
  });
}

function signal(pid, name) {
  try {
    process.kill(pid, name);
  } catch {
    // Gone already.
  }
}

/**
 * Spawns the postmaster as a child of this process (not detached, as pg_ctl would), so that
 * its exit is seen and it is reaped at once. Its output goes to `log`; the child is unref'd,
 * so a test that forgets to stop it still ends, and the exit handler stops it then.
 */
function spawnPostmaster(dir, log, args) {
  const out = openSync(log, "w");
  let proc;
  try {
    proc = spawn(postgresBin("postgres"), args, { ...asPostgres(dir), stdio: ["ignore", out, out] });
  } finally {
    closeSync(out);
  }
  const server = { proc, dir, exited: new Promise((res) => proc.once("exit", res)), error: null };
  // A program that cannot be spawned has no pid: `ready` reports it with this error.
  proc.once("error", (e) => (server.error = e));
  proc.unref();
  live.add(server);
  server.exited.then(() => live.delete(server));
  return server;
}

/**
 * Waits until the postmaster reports itself ready in its lock file (`postmaster.pid`, whose
 * eighth line pg_ctl reads the same way): "ready", "exited", or "timeout".
 */
function ready(server, data, ms) {
  return untilReady(server, () => {
    try {
      const lines = readFileSync(join(data, "postmaster.pid"), "utf8").split("\n");
      return Number(lines[0]) === server.proc.pid && lines[7]?.trim() === "ready";
    } catch {
      return false; // not written yet
    }
  }, ms);
}

/**
 * Stops a postmaster and waits for it to exit: SIGQUIT is its immediate shutdown (no
 * checkpoint: the cluster is thrown away), which ends its children first; SIGKILL if it has
 * not exited within 30 s.
 */
async function halt(server) {
  if (server.proc.exitCode !== null || server.proc.signalCode !== null || server.proc.pid === undefined) return;
  server.proc.kill("SIGQUIT");
  let timer;
  const late = new Promise((res) => (timer = setTimeout(() => res("late"), 30000)));
  if ((await Promise.race([server.exited, late])) === "late") {
    server.proc.kill("SIGKILL");
    await server.exited;
  }
  clearTimeout(timer);
}

/** What `halt` does, synchronously, for the exit handler; then the folder goes too. */
function killNow({ proc, dir }) {
  if (proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
    proc.kill("SIGQUIT");
    const until = Date.now() + 5000;
    while (alive(proc.pid) && Date.now() < until) sleepSync(20);
    if (alive(proc.pid)) proc.kill("SIGKILL");
  }
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Creates an empty database on the instance `pg` (from `startPostgres`) and resolves to its
 * URL. `name` (lower-case letters, digits and `_`) defaults to a fresh one, for a test that
 * wants a database of its own.
 */
export async function createDatabase(pg, name = `test_${process.pid}_${++databases}`) {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a plain database name: ${name}`);
  await psql(pg, "postgres", `CREATE DATABASE ${name}`);
  return `postgres://${USER}@127.0.0.1:${pg.port}/${name}`;
}
let databases = 0;

/**
 * Runs `sql` with psql on `database` of `pg` and resolves to its output, unaligned and
 * without headers (`-At`): one row a line, columns separated by `|`. Rejects with psql's
 * error on the first failing statement.
 */
export function psql(pg, database, sql) {
  const args = ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(pg.port)];
  return new Promise((res, rej) => {
    execFile(
      postgresBin("psql"),
      [...args, "-U", USER, "-d", database, "-c", sql],
      { timeout: 30000, env: { ...process.env, PGCONNECT_TIMEOUT: "10" } },
      (err, stdout, stderr) => {
        if (!err) return res(stdout);
        const why = stderr.trim() || err.message;
        rej(new Error(`psql on ${database} failed (${err.code ?? err.signal}): ${why}\n${sql}`));
      },
    );
  });
}

let binDir;
/**
 * The path of one of PostgreSQL's programs. Debian keeps them in
 * /usr/lib/postgresql/<major>/bin, off PATH; $POSTGRES_BIN_DIR overrides, and elsewhere the
 * directory of `initdb` on PATH is used.
 */
export function postgresBin(program) {
  binDir ??= findBinDir();
  return join(binDir, program);
}

function findBinDir() {
  if (process.env.POSTGRES_BIN_DIR) return process.env.POSTGRES_BIN_DIR;
  const root = "/usr/lib/postgresql";
  if (existsSync(root)) {
    const majors = readdirSync(root).filter((name) => /^\d+$/.test(name));
    for (const major of majors.sort((a, b) => b - a)) {
      const dir = join(root, major, "bin");
      if (existsSync(join(dir, "initdb"))) return dir;
    }
  }
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(join(dir, "initdb"))) return dir;
  }
  throw new Error("PostgreSQL is not installed (no initdb): run scripts/services.sh");
}

const isRoot = () => process.getuid?.() === 0;

let user;
/** The postgres user's uid and gid, which own the cluster when the tests run as root. */
function postgresUser() {
  const id = (flag) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }));
  user ??= { uid: id("-u"), gid: id("-g") };
  return user;
}

/**
 * Spawn options for PostgreSQL's programs: as the postgres user when the tests run as root,
 * from the cluster's folder (root's working directory may be closed to that user).
 */
function asPostgres(dir) {
  return isRoot() ? { cwd: dir, ...postgresUser() } : { cwd: dir };
}

/** Whether `pid` runs; a zombie, which the exit handler cannot reap, counts as gone. */
function alive(pid) {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return e.code === "EPERM";
  }
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
const sleepSync = (ms) => Atomics.wait(sleeper, 0, 0, ms);
