// Helpers for the browser tests: the real server binary on an ephemeral port with a
// temporary database and web/dist as its page, and Debian's Chromium driven by
// playwright-core (which downloads no browser).

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { spawnServer } from "../../../tests/support/server.mjs";

// Test matrices and the reference product, shared with tests/e2e.
export { randomMatrix, referenceProduct } from "../../../tests/support/matrix.mjs";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, "../../..");
export const SERVER_BIN = process.env.BRAIN_SERVER_BIN ?? join(ROOT, "target/debug/brain-server");
export const WEB_DIR = process.env.BRAIN_WEB_DIR ?? join(ROOT, "web/dist");
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
export const OUTPUT = process.env.TEST_OUTPUT_DIR ?? join(ROOT, "test-output/web");

export function tempDir() {
  return mkdtempSync(join(tmpdir(), "brain-web-"));
}

/** Starts the server with web/dist as its page; resolves once it prints its address. */
export function startServer({ dbPath, port = 0, env = {} }) {
  return spawnServer(SERVER_BIN, { dbPath, port, env, webDir: WEB_DIR });
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

export function cleanup(dir) {
  rmSync(dir, { recursive: true, force: true });
}
