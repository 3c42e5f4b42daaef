// Helpers for the browser tests: the real server binary on an ephemeral port with a
// temporary database and web/dist as its page, and Debian's Chromium driven by
// playwright-core (which downloads no browser).

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, "../../..");
export const SERVER_BIN = process.env.BRAIN_SERVER_BIN ?? join(ROOT, "target/debug/brain-server");
export const WEB_DIR = process.env.BRAIN_WEB_DIR ?? join(ROOT, "web/dist");
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
export const OUTPUT = process.env.TEST_OUTPUT_DIR ?? join(ROOT, "test-output/web");

export function tempDir() {
  return mkdtempSync(join(tmpdir(), "brain-web-"));
}

/** Starts the server; resolves once it prints its address. `port` 0 lets the OS choose. */
export async function startServer({ dbPath, port = 0, env = {} }) {
  const proc = spawn(SERVER_BIN, [], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      DATABASE_PATH: dbPath,
      WEB_DIR,
      RUST_LOG: process.env.RUST_LOG ?? "warn",
      API_TOKEN: "",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise((res) => proc.once("exit", (code, signal) => res({ code, signal })));
  const url = await new Promise((res, rej) => {
    let out = "";
    const timer = setTimeout(() => rej(new Error(`server did not start:\n${stderr}`)), 30_000);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[\d.]+:\d+)/);
      if (m) {
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
    proc,
    stderr: () => stderr,
    async kill(signal = "SIGKILL") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

export async function launchBrowser() {
  mkdirSync(OUTPUT, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/** Polls `fn` until it returns a truthy value; throws with `what` after `ms`. */
export async function waitFor(fn, what, ms = 30_000, every = 200) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

export async function getJson(url, init) {
  const res = await fetch(url, init);
  if (!res.ok) throw new Error(`${init?.method ?? "GET"} ${url}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** C = A·B with float64 accumulation, row-major. */
export function referenceProduct(a, b, m, k, n) {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      for (let j = 0; j < n; j++) c[i * n + j] += x * b[p * n + j];
    }
  }
  return c;
}

export function cleanup(dir) {
  rmSync(dir, { recursive: true, force: true });
}
