// Private Redis instances for tests: a redis-server on 127.0.0.1 at an ephemeral port, with
// no persistence, gone when the test ends or, failing that, when the Node process exits.
// Spoken to in raw RESP, so no npm dependency: both the e2e and the browser test packages can
// import it. scripts/services.sh installs redis-server.
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { freePort, untilReady } from "./ports.mjs";

/** Starts retried when another process took the probed port before Redis bound it. */
const PORT_ATTEMPTS = 5;

/** Servers not yet exited, for the exit handler below. */
const live = new Set();

// A test that crashes or forgets to stop its instance must not leave a redis-server behind:
// a child outlives the Node process. Only synchronous work runs in an 'exit' handler.
process.on("exit", () => {
  for (const server of live) server.proc.kill("SIGKILL");
});

/**
 * Starts a redis-server and resolves to `{ url, port, stop() }` once it answers PING: `url`
 * is `redis://127.0.0.1:PORT`. Nothing is saved (no RDB snapshots, no append-only file).
 * `port` asks for a given port (a restart in the same place), else a free one is picked.
 * `stop()` shuts it down and resolves once it has exited; it is idempotent and registered
 * with `t.after` when a node:test context `t` is given. Rejects with the server's log when it
 * does not answer within `startMs`.
 */
export async function startRedis({ t, startMs = 20000, port: wanted } = {}) {
  for (let attempt = 1; ; attempt++) {
    const port = wanted ?? (await freePort());
    const server = spawnRedis(port);
    const outcome = await ready(server, port, startMs);
    if (outcome === "ready") {
      let stopping;
      const stop = () => (stopping ??= halt(server));
      t?.after(stop);
      return { url: `redis://127.0.0.1:${port}`, port, stop };
    }
    await halt(server);
    if (outcome === "exited" && attempt < PORT_ATTEMPTS && /address already in use/i.test(server.log)) continue;
    const why =
      outcome === "exited"
        ? `exited while starting${server.error ? ` (${server.error.message}; run scripts/services.sh)` : ""}`
        : `did not answer PING within ${startMs} ms`;
    throw new Error(`redis-server on 127.0.0.1:${port} ${why} (attempt ${attempt}); its log:\n${server.log.trim()}`);
  }
}

/**
 * Sends one command to the Redis instance `redis` (anything with a `port`) and resolves to
 * its reply: a string, a number, null, or an array of those; an error reply rejects.
 */
export function redisCommand(redis, ...args) {
  const request = [`*${args.length}\r\n`];
  for (const arg of args) {
    const bytes = Buffer.from(String(arg));
    request.push(`$${bytes.length}\r\n`, bytes, "\r\n");
  }
  return exchange(redis.port, Buffer.concat(request.map((part) => Buffer.from(part))), parseReply).then((reply) => {
    if (reply instanceof Error) throw reply;
    return reply;
  });
}

/**
 * The server as a child of this process, unref'd (with its output pipes) so that a test that
 * forgets to stop it still ends; the exit handler stops it then.
 */
function spawnRedis(port) {
  const bin = process.env.REDIS_SERVER_BIN ?? "redis-server";
  // `--dir`: where it would write, were anything ever saved; never the test's directory.
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmpdir()];
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  const server = { proc, log: "", error: null, exited: new Promise((res) => proc.once("exit", res)) };
  // A program that cannot be spawned has no pid: `ready` reports it with this error.
  proc.once("error", (e) => (server.error = e));
  for (const stream of [proc.stdout, proc.stderr]) {
    stream.on("data", (d) => (server.log += d));
    stream.unref?.();
  }
  proc.unref();
  live.add(server);
  server.exited.then(() => live.delete(server));
  return server;
}

/** Waits until the server answers PING: "ready", "exited", or "timeout". */
function ready(server, port, ms) {
  return untilReady(server, () => ping(port), ms);
}

/** Whether a Redis server on `port` answers an inline PING with +PONG. */
function ping(port) {
  const line = (buf) => {
    const end = buf.indexOf("\r\n");
    return end < 0 ? undefined : buf.subarray(0, end).toString();
  };
  return exchange(port, Buffer.from("PING\r\n"), line).then(
    (reply) => reply === "+PONG",
    () => false,
  );
}

/**
 * Sends `request` on a new connection to 127.0.0.1:`port` and resolves to what `parse` makes
 * of the bytes received so far, once it makes something of them (not undefined).
 */
function exchange(port, request, parse, ms = 5000) {
  return new Promise((res, rej) => {
    const socket = connect(port, "127.0.0.1");
    let received = Buffer.alloc(0);
    socket.setTimeout(ms, () => socket.destroy(new Error(`no reply from 127.0.0.1:${port} within ${ms} ms`)));
    socket.once("error", rej);
    socket.once("close", () => rej(new Error(`127.0.0.1:${port} closed the connection before replying`)));
    socket.on("data", (chunk) => {
      received = Buffer.concat([received, chunk]);
      let parsed;
      try {
        parsed = parse(received);
      } catch (e) {
        return socket.destroy(e);
      }
      if (parsed === undefined) return;
      res(parsed);
      socket.end();
    });
    socket.write(request);
  });
}

/** One RESP2 reply from the start of `buf`, or undefined while it is incomplete. */
function parseReply(buf) {
  const parsed = parseAt(buf, 0);
  return parsed === undefined ? undefined : parsed.value;
}

function parseAt(buf, at) {
  const end = buf.indexOf("\r\n", at);
  if (end < 0) return undefined;
  const type = String.fromCharCode(buf[at]);
  const text = buf.subarray(at + 1, end).toString();
  const next = end + 2;
  switch (type) {
    case "+":
      return { value: text, next };
    case "-":
      return { value: new Error(`Redis: ${text}`), next };
    case ":":
      return { value: Number(text), next };
    case "$": {
      const length = Number(text);
      if (length < 0) return { value: null, next };
      if (buf.length < next + length + 2) return undefined;
      return { value: buf.subarray(next, next + length).toString(), next: next + length + 2 };
    }
    case "*": {
      const count = Number(text);
      if (count < 0) return { value: null, next };
      const value = [];
      let from = next;
      for (let i = 0; i < count; i++) {
        const item = parseAt(buf, from);
        if (item === undefined) return undefined;
        value.push(item.value);
        from = item.next;
      }
      return { value, next: from };
    }
    default:
      throw new Error(`not a RESP reply: ${JSON.stringify(buf.subarray(at, end).toString())}`);
  }
}

/**
 * Stops a server and waits for it to exit (so its port is closed): SIGTERM is its orderly
 * shutdown, which saves nothing here; SIGKILL if it has not exited within 10 s.
 */
async function halt(server) {
  const { proc } = server;
  if (proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill("SIGTERM");
  let timer;
  const late = new Promise((res) => (timer = setTimeout(() => res("late"), 10000)));
  if ((await Promise.race([server.exited, late])) === "late") {
    proc.kill("SIGKILL");
    await server.exited;
  }
  clearTimeout(timer);
}
