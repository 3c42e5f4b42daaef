// A job whose inputs exceed the server's memory (#16), scaled down for the test suite: two
// 128 MiB `.npy` files, made here on disk, uploaded to a server whose memory cgroup allows it
// 96 MiB (with PANEL_CACHE_BYTES = 16 MiB). The upload must succeed, workers compute a few
// tiles from panels read off disk, and cancelling frees the job's folder. The full-size run
// (16384² f32, 2 GiB of input, under 512 MB) is `make bench-bigjob`.
//
// Needs root for the cgroup; without one the test fails and says why (it never skips: CI runs
// as root on the same image as this machine).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SERVER_BIN, serverLog, startWorker } from "./helpers.mjs";
import { spawnServer } from "../support/server.mjs";
import { memoryCgroup } from "../support/cgroup.mjs";
import { MiB, submitFiles, waitGone, waitJob, writeNpyF32 } from "./bigjob.mjs";

// A: 4096×8192, B: 8192×4096 (128 MiB each), C: 4096×4096. Tile 64: panels of 2 MiB, and a
// tile's reference product (64·8192·64) takes the test's workers tens of milliseconds.
const M = 4096;
const K = 8192;
const N = 4096;
const TILE = 64;
const LIMIT = 96 * MiB;
const PANEL_CACHE = 16 * MiB;
const TILES_BEFORE_CANCEL = 3;

test("a job twice the server's memory limit is uploaded, served to workers, and cancelled with its space freed", { timeout: 240000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "brain-bigjob-"));
  const cgroup = memoryCgroup(LIMIT);
  let server;
  t.after(async () => {
    await server?.kill();
    await cgroup.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  const aPath = join(dir, "a.npy");
  const bPath = join(dir, "b.npy");
  const inputBytes = writeNpyF32(aPath, M, K, 1) + writeNpyF32(bPath, K, N, 2);
  assert.ok(inputBytes > 2 * LIMIT, "the inputs exceed the memory limit");

  const dataDir = join(dir, "server", "jobs");
  server = await spawnServer(cgroup.wrap(SERVER_BIN, dir), {
    dbPath: join(dir, "server", "brain.db"),
    webDir: join(tmpdir(), "brain-e2e-no-web"),
    env: { RUST_LOG: "info", DATA_DIR: dataDir, PANEL_CACHE_BYTES: String(PANEL_CACHE) },
    startMs: 20000,
  });
  const limited = () => {
    const s = cgroup.stats();
    return `cgroup ${cgroup.dir}: limit ${LIMIT / MiB} MiB, peak ${(s.peak / MiB).toFixed(0)} MiB, ` +
      `failcnt ${s.failcnt}, OOM kills ${s.oomKills}; server ${server.proc.exitCode ?? server.proc.signalCode ?? "running"}`;
  };
  const alive = () => server.proc.exitCode === null && server.proc.signalCode === null;
  /** Why the server is gone, if it is: the memory limit killed it, or something else. */
  const verdict = async (during) => {
    await Promise.race([server.exited, new Promise((r) => setTimeout(r, 1000))]);
    if (alive()) return `the server is still running (${limited()})`;
    const s = cgroup.stats();
    const killed = server.proc.signalCode === "SIGKILL" && s.oomKills > 0;
    return killed
      ? `the server was killed by its ${LIMIT / MiB} MiB memory limit during ${during} (exit 137, ${limited()}): ` +
        `it holds more than the limit in memory`
      : `the server exited during ${during} (${limited()})\n${serverLog(server)}`;
  };

  const sub = await submitFiles(server.url, aPath, bPath, { tile: TILE, name: "bigger than memory" });
  if (sub.status !== 201) assert.fail(`upload of ${(inputBytes / MiB).toFixed(0)} MiB refused or broken: ${sub.status >= 200 ? `HTTP ${sub.status} ${sub.text}` : "no answer"} ${sub.curlError}\n${await verdict("the upload")}`);
  const id = sub.json.id;
  t.diagnostic(`uploaded ${(inputBytes / MiB).toFixed(0)} MiB in ${sub.seconds.toFixed(1)} s; ${limited()}`);

  // Two workers compute a few tiles from panels the server reads off disk.
  const workers = [await startWorker(t, server.url, { name: "big-1" }), await startWorker(t, server.url, { name: "big-2" })];
  try {
    await waitJob(server.url, id, (j) => j.tasks_done >= TILES_BEFORE_CANCEL, { ms: 120000, what: `${TILES_BEFORE_CANCEL} tiles done` });
  } catch (e) {
    assert.fail(`${e.message}\n${await verdict("the run with workers")}`);
  }
  for (const w of workers) w.stop();
  assert.ok(alive(), await verdict("the run with workers"));

  const cancelled = await fetch(`${server.url}/api/jobs/${id}`, { method: "DELETE" });
  assert.equal(cancelled.status, 200, await cancelled.text());
  assert.ok(await waitGone(join(dataDir, id), 30000), `the cancelled job's folder ${join(dataDir, id)} is still there`);
  assert.deepEqual(readdirSync(dataDir), [], "nothing is left under DATA_DIR");
  const s = cgroup.stats();
  assert.ok(alive(), await verdict("the cancellation"));
  assert.equal(s.oomKills, 0, limited());
  t.diagnostic(`after cancelling: ${limited()}`);
});
