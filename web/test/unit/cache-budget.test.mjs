import { test } from "node:test";
import assert from "node:assert/strict";
import { affordableCache, chosenCacheMib } from "../../src/volunteer/cache-budget.js";

test("the panel cache offered follows the device's memory: a sixteenth by default, a quarter at most, 64 MiB to 1 GiB", () => {
  assert.deepEqual(affordableCache(8), { choices: [64, 128, 256, 512, 1024], defaultMib: 512 });
  assert.deepEqual(affordableCache(4), { choices: [64, 128, 256, 512, 1024], defaultMib: 256 });
  assert.deepEqual(affordableCache(2), { choices: [64, 128, 256, 512], defaultMib: 128 });
  assert.deepEqual(affordableCache(1), { choices: [64, 128, 256], defaultMib: 64 });
  // A phone that says half a gigabyte still gets the smallest cache the grid plans for.
  assert.deepEqual(affordableCache(0.25), { choices: [64], defaultMib: 64 });
  assert.deepEqual(affordableCache(32), { choices: [64, 128, 256, 512, 1024], defaultMib: 1024 });
});

test("a browser that does not say how much memory it has gets a modest cache", () => {
  for (const unknown of [undefined, null, 0, -1, NaN, "8"]) {
    assert.deepEqual(affordableCache(unknown), { choices: [64, 128, 256], defaultMib: 128 }, String(unknown));
  }
});

test("a stored choice stands only while the device offers it", () => {
  const afford = affordableCache(2);
  assert.equal(chosenCacheMib("256", afford), 256);
  assert.equal(chosenCacheMib("1024", afford), 128, "more than this device offers");
  assert.equal(chosenCacheMib("100", afford), 128, "not a choice");
  assert.equal(chosenCacheMib(null, afford), 128);
  assert.equal(chosenCacheMib("<script>", afford), 128);
});
