import { test } from "node:test";
import assert from "node:assert/strict";
import { parseDuty } from "../../src/volunteer/duty.js";
import { detectFeatures, pickVariant } from "../../src/volunteer/features.js";
import { EFFECTIVE_WINDOW_MS, SpeedMeter, VolunteerStats } from "../../src/volunteer/stats.js";
import { verifySha256, toBase64, toHex } from "../../src/volunteer/wasm-loader.js";
import { createHash } from "node:crypto";

test("duty values are clamped and unreadable ones mean full speed", () => {
  assert.equal(parseDuty("0.5"), 0.5);
  assert.equal(parseDuty("abc"), 1);
  assert.equal(parseDuty(0), 1);
  assert.equal(parseDuty(7), 1);
  assert.equal(parseDuty(0.001), 0.05);
});

test("variant choice: fastest validated among those shipped", () => {
  const all = ["relaxed", "simd", "scalar"];
  assert.equal(pickVariant({ relaxed: true, simd: true }, all), "relaxed");
  assert.equal(pickVariant({ relaxed: false, simd: true }, all), "simd");
  assert.equal(pickVariant({ relaxed: false, simd: false }, all), "scalar");
  assert.equal(pickVariant({ relaxed: true, simd: true }, ["simd", "scalar"]), "simd");
  assert.equal(pickVariant({ relaxed: false, simd: false }, ["simd"]), null);
});

test("the probe modules are well-formed: Node's V8 validates the SIMD one", () => {
  const f = detectFeatures();
  assert.equal(f.simd, true);
  assert.equal(typeof f.relaxed, "boolean");
  assert.deepEqual(detectFeatures({ validate: () => false }), { simd: false, relaxed: false });
  assert.deepEqual(detectFeatures(null), { simd: false, relaxed: false });
});

test("speed meter: first sample, then an exponential average", () => {
  const m = new SpeedMeter(0.5);
  assert.equal(m.add(2e9, 1000), 2);
  assert.equal(m.add(4e9, 1000), 3);
  m.add(1e9, 0); // ignored
  assert.equal(m.samples, 2);
  const s = new VolunteerStats();
  s.recordCompute(0, 1e9, 1000);
  s.recordCompute(1, 3e9, 1000);
  assert.equal(s.perThreadGflops(), 2);
  assert.equal(s.totalGflops(2), 4);
  s.recordAck(true, 10);
  s.recordAck(false, 10);
  assert.equal(s.accepted, 1);
  assert.equal(s.refused, 1);
  assert.equal(s.flops, 10);
});

test("effective speed: verified work per second of contributing, over a window", () => {
  const s = new VolunteerStats();
  s.recordCompute(0, 40e9, 1000); // the kernel: 40 GFLOP/s
  assert.equal(s.effectiveGflops(0), 0, "not contributing yet");
  s.contributing(1000);
  s.recordAck(true, 4e9, 2000);
  s.recordAck(false, 4e9, 2500); // refused: not given
  s.recordAck(true, 4e9, 3000);
  // 8 GFLOP verified in the 2 s since start: 4 GFLOP/s, a tenth of the kernel's speed.
  assert.equal(s.effectiveGflops(3000), 4);
  assert.equal(s.perThreadGflops(), 40, "the kernel's figure is not touched");
  // Later on only the window counts: the first result has left it.
  s.recordAck(true, 2e9, 12_500);
  assert.equal(s.effectiveGflops(1000 + EFFECTIVE_WINDOW_MS + 1500), (4e9 + 2e9) / EFFECTIVE_WINDOW_MS / 1e6);
  assert.equal(s.recent.length, 2, "what left the window is dropped");
  s.contributing(null); // paused
  assert.equal(s.effectiveGflops(13_000), 0);
  assert.equal(s.recent.length, 0);
});

test("integrity: the digest must match the manifest", async () => {
  const bytes = new TextEncoder().encode("\0asm fake module");
  const hex = createHash("sha256").update(bytes).digest("hex");
  assert.equal(await verifySha256(bytes, hex), true);
  await assert.rejects(verifySha256(bytes, "00".repeat(32)), /integrity check/);
  assert.equal(await verifySha256(bytes, hex, null), false); // no crypto.subtle: SRI only
  assert.equal(toBase64(new Uint8Array([0xff, 0, 1])), "/wAB");
  assert.equal(toHex(new Uint8Array([0xab, 1])), "ab01");
});
