// The network shaper (`brain-shaper`, the `shaper` crate) for tests and benchmarks: a TCP proxy
// put between a worker and the server that gives each connection a link's delay, jitter,
// bandwidth and resets (this machine's kernel has no netem). No dependencies, so any test
// package can import it. The proxy stops when its stdin closes, so it dies with the test
// process however that ends; `--max-seconds` bounds it besides.
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The flag behind each override `startShaper` takes. */
const FLAGS = {
  downMbps: "--down-mbps",
  upMbps: "--up-mbps",
  rttMs: "--rtt-ms",
  jitterMs: "--jitter-ms",
  resetEveryS: "--reset-every-s",
  seed: "--seed",
  maxSeconds: "--max-seconds",
  maxConnections: "--max-connections",
};

/** Shapers not yet exited, for the exit handler below. */
const live = new Set();

// Closing stdin already stops a shaper whose parent exits; this only hurries it. Only
// synchronous work runs in an 'exit' handler.
process.on("exit", () => {
  for (const shaper of live) shaper.proc.kill("SIGKILL");
});

/**
 * The shaper binary: `BRAIN_SHAPER_BIN`, else the workspace's debug build, built with cargo
 * when it is missing.
 */
export function shaperBin() {
  if (process.env.BRAIN_SHAPER_BIN) return process.env.BRAIN_SHAPER_BIN;
  const bin = resolve(ROOT, "target/debug/brain-shaper");
  if (!existsSync(bin)) {
    // Output piped, not inherited: a test file's stdout is its runner's channel.
    const built = spawnSync("cargo", ["build", "-p", "shaper", "--bin", "brain-shaper"], { cwd: ROOT, encoding: "utf8" });
    if (built.status !== 0)
      throw new Error(`cargo build -p shaper failed (${built.error?.message ?? `status ${built.status}`}):\n${built.stderr}`);
  }
  return bin;
}

/**
 * Starts a shaper in front of `upstream` (`host:port`, a port number, or a URL such as a test
 * server's `http://127.0.0.1:PORT`) and resolves once it listens, to `{ url, port, stop(),
 * log() }`: `url` is `http://127.0.0.1:PORT`, for clients to connect to instead of the
 * upstream's. `profile` is campus, home, mobile or none (the default); each field can be
 * overridden (`downMbps`, `upMbps`, `rttMs`, `jitterMs`, `resetEveryS`, `seed`, `maxSeconds`,
 * `maxConnections`). `stop()` closes its stdin and resolves, once it has exited, to its
 * summary (`{ profile, seconds, connections, refused, upstream_failures, resets, bytes_up,
 * bytes_down }`); it is idempotent and registered with `t.after` when a node:test context `t`
 * is given.
 */
export async function startShaper({ upstream, profile = "none", t, startMs = 20000, ...overrides }) {
  const args = ["--upstream", upstreamAddress(upstream), "--profile", profile];
  for (const [name, value] of Object.entries(overrides)) {
    if (!FLAGS[name]) throw new Error(`startShaper: unknown option ${name} (known: ${Object.keys(FLAGS).join(", ")})`);
    if (value !== undefined) args.push(FLAGS[name], String(value));
  }
  const proc = spawn(shaperBin(), args, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const shaper = { proc, log: "", error: null, exited: new Promise((res) => proc.once("exit", res)) };
  live.add(shaper);
  shaper.exited.then(() => live.delete(shaper));
  proc.once("error", (e) => (shaper.error = e));
  // Unref'd with its pipes, so that a test that forgets `stop()` still ends: the pipe to its
  // stdin closes as this process exits, and that stops it.
  proc.stdin.on("error", () => {}); // EPIPE if it already exited
  proc.stderr.on("data", (d) => (shaper.log += d));
  for (const stream of [proc.stdin, proc.stdout, proc.stderr]) stream.unref?.();
  proc.unref();

  let timer;
  const port = await new Promise((res, rej) => {
    let out = "";
    timer = setTimeout(() => rej(new Error(`brain-shaper did not listen within ${startMs} ms:\n${shaper.log}`)), startMs);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/^listening [\d.]+:(\d+)$/m);
      if (m) res(Number(m[1]));
    });
    shaper.exited.then((code) => {
      const why = shaper.error ? shaper.error.message : `status ${code}`;
      rej(new Error(`brain-shaper exited before listening (${why}):\n${shaper.log}`));
    });
  }).finally(() => clearTimeout(timer));

  let stopping;
  const stop = () => (stopping ??= halt(shaper));
  t?.after(stop);
  return { url: `http://127.0.0.1:${port}`, port, stop, log: () => shaper.log };
}

/** `host:port` from what a test has at hand: a URL, a port, or `host:port` already. */
function upstreamAddress(upstream) {
  if (typeof upstream === "number") return `127.0.0.1:${upstream}`;
  if (typeof upstream !== "string") throw new Error(`startShaper: upstream must be a URL, host:port or a port, not ${upstream}`);
  return /^[a-z]+:\/\//i.test(upstream) ? new URL(upstream).host : upstream;
}

/**
 * Closes the shaper's stdin (its orderly stop), waits for it to exit, and returns the summary
 * it printed last on stderr; SIGKILL if it has not exited within 10 s (no summary then).
 */
async function halt(shaper) {
  const { proc } = shaper;
  if (proc.exitCode === null && proc.signalCode === null) {
    proc.stdin.end();
    let timer;
    const late = new Promise((res) => (timer = setTimeout(() => res("late"), 10000)));
    if ((await Promise.race([shaper.exited, late])) === "late") {
      proc.kill("SIGKILL");
      await shaper.exited;
    }
    clearTimeout(timer);
  }
  // The exit may come before the last of stderr is read.
  if (!proc.stderr.readableEnded) await new Promise((res) => proc.stderr.once("close", res));
  const last = shaper.log.trimEnd().split("\n").at(-1);
  try {
    return JSON.parse(last);
  } catch {
    return null;
  }
}
