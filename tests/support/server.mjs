// Starts the real server binary for a test and waits until it prints its address. Shared by
// the end-to-end tests (tests/e2e) and the browser tests (web/test/e2e); no dependencies, so
// either package can import it.
import { spawn } from "node:child_process";

/**
 * Spawns `bin` with the environment a test server needs plus `env`, and resolves once it
 * prints `listening on http://…`. `port: 0` lets the OS pick; a restart passes the previous
 * port so that clients can reconnect.
 */
export async function spawnServer(bin, { dbPath, webDir, port = 0, env = {}, startMs = 30000 }) {
  const proc = spawn(bin, [], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      DATABASE_PATH: dbPath,
      WEB_DIR: webDir,
      RUST_LOG: process.env.RUST_LOG ?? "warn",
      API_TOKEN: "",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  // Its log lines (stdout) and errors (stderr) in the order they came, for failing tests.
  let stderr = "";
  let log = "";
  proc.stderr.on("data", (d) => {
    stderr += d;
    log += d;
  });
  const exited = new Promise((res) => proc.once("exit", (code, signal) => res({ code, signal })));
  const url = await new Promise((res, rej) => {
    let out = "";
    const timer = setTimeout(() => rej(new Error(`server did not start:\n${stderr}`)), startMs);
    proc.stdout.on("data", (d) => {
      log += d;
      if (out === null) return;
      out += d;
      const m = out.match(/listening on (http:\/\/[\d.]+:\d+)/);
      if (m) {
        out = null;
        clearTimeout(timer);
        res(m[1]);
      }
    });
    exited.then(({ code }) => {
      clearTimeout(timer);
      rej(new Error(`server exited with ${code} before listening:\n${stderr}`));
    });
  });
  return {
    url,
    port: Number(new URL(url).port),
    dbPath,
    proc,
    exited,
    stderr: () => stderr,
    log: () => log,
    async kill(signal = "SIGKILL") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}
