// Private PostgreSQL and Redis instances (tests/support/postgres.mjs, tests/support/redis.mjs),
// which the tests of several orchestrators sharing one grid stand on: each one starts, is
// reachable at the URL it gives, keeps its databases apart, and leaves nothing behind, not
// even when the test process crashes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { createDatabase, postgresBin, startPostgres } from "../support/postgres.mjs";
import { redisCommand, startRedis } from "../support/redis.mjs";

/** Runs `statement` with psql on the database at `url` and resolves to its rows (`-At`). */
function sql(url, statement) {
  return new Promise((res, rej) => {
    const args = ["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", statement];
    execFile(postgresBin("psql"), args, { timeout: 30000 }, (err, stdout, stderr) =>
      err ? rej(new Error(`psql ${url}: ${stderr || err.message}`)) : res(stdout.trim()),
    );
  });
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
function accepts(port) {
  return new Promise((res, rej) => {
    const socket = connect(port, "127.0.0.1");
    socket.setTimeout(10000, () => socket.destroy(new Error(`connecting to port ${port} hung`)));
    socket.once("connect", () => {
      socket.destroy();
      res(true);
    });
    socket.once("error", (e) => (e.code === "ECONNREFUSED" ? res(false) : rej(e)));
  });
}

/** Resolves once nothing accepts connections on `port`; rejects after `ms`. */
async function closed(port, ms = 15000) {
  const until = Date.now() + ms;
  while (await accepts(port)) {
    if (Date.now() > until) throw new Error(`port ${port} still accepts connections after ${ms} ms`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

test("a private PostgreSQL has separate databases, and stopping it leaves nothing behind", { timeout: 120000 }, async (t) => {
  const pg = await startPostgres({ t });
  assert.equal(pg.url, `postgres://brain@127.0.0.1:${pg.port}/brain`);
  assert.equal(await sql(pg.url, "SELECT current_user, current_database()"), "brain|brain");

  const [one, two] = await Promise.all([createDatabase(pg, "one"), createDatabase(pg, "two")]);
  assert.equal(one, `postgres://brain@127.0.0.1:${pg.port}/one`);
  assert.equal(two, `postgres://brain@127.0.0.1:${pg.port}/two`);
  await sql(one, "CREATE TABLE jobs (id bigint PRIMARY KEY); INSERT INTO jobs VALUES (7)");
  assert.equal(await sql(one, "SELECT id FROM jobs"), "7");
  assert.equal(await sql(two, "SELECT to_regclass('jobs') IS NULL"), "t", "the table leaked into the other database");
  assert.equal(await sql(pg.url, "SELECT to_regclass('jobs') IS NULL"), "t");
  const fresh = await createDatabase(pg);
  assert.match(fresh, new RegExp(`^postgres://brain@127\\.0\\.0\\.1:${pg.port}/test_\\d+_\\d+$`));
  assert.equal(await sql(fresh, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
  // Speed over durability: a throwaway cluster.
  assert.equal(await sql(pg.url, "SHOW fsync"), "off");

  assert.ok(existsSync(pg.dir));
  await pg.stop();
  await pg.stop();
  assert.equal(await accepts(pg.port), false, "PostgreSQL still listens after stop()");
  assert.equal(existsSync(pg.dir), false, "its folder is still there after stop()");
});

test("a private Redis answers PING, SET and GET in RESP, and stopping it leaves nothing behind", { timeout: 60000 }, async (t) => {
  const redis = await startRedis({ t });
  assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`);
  assert.equal(await redisCommand(redis, "PING"), "PONG");
  assert.equal(await redisCommand(redis, "SET", "grid:owner", "instance-1"), "OK");
  assert.equal(await redisCommand(redis, "GET", "grid:owner"), "instance-1");
  assert.equal(await redisCommand(redis, "GET", "grid:nobody"), null);
  await assert.rejects(redisCommand(redis, "NO-SUCH-COMMAND"), /unknown command/);
  // No persistence: nothing is written to disk behind the test's back.
  assert.deepEqual(await redisCommand(redis, "CONFIG", "GET", "save"), ["save", ""]);
  assert.deepEqual(await redisCommand(redis, "CONFIG", "GET", "appendonly"), ["appendonly", "no"]);

  await redis.stop();
  await redis.stop();
  assert.equal(await accepts(redis.port), false, "Redis still listens after stop()");
});

test("a test process that crashes without stopping them leaves no PostgreSQL or Redis behind", { timeout: 120000 }, async () => {
  const script = `
    import { startPostgres } from ${JSON.stringify(new URL("../support/postgres.mjs", import.meta.url).href)};
    import { startRedis } from ${JSON.stringify(new URL("../support/redis.mjs", import.meta.url).href)};
    const [pg, redis] = await Promise.all([startPostgres(), startRedis()]);
    console.log(JSON.stringify({ pgPort: pg.port, dir: pg.dir, redisPort: redis.port }));
    throw new Error("crashed on purpose");
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const code = await new Promise((res) => child.once("close", res));
  assert.notEqual(code, 0);
  assert.match(stderr, /crashed on purpose/);
  const started = JSON.parse(stdout.trim().split("\n").at(-1));

  // The exit handlers stop both before the process is gone; the kernel may still be closing
  // a killed server's sockets, hence a bounded wait rather than a single look.
  await closed(started.pgPort);
  await closed(started.redisPort);
  assert.equal(existsSync(started.dir), false, "the crashed process's PostgreSQL folder is still there");
});
