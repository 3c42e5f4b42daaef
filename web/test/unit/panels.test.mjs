import { test } from "node:test";
import assert from "node:assert/strict";
import { PanelCache } from "../../src/volunteer/panels.js";

const panel = (bytes, fill = 1) => new Uint8Array(bytes).fill(fill).buffer;

/** A `task_assigned` as the server sends it: keys always, panels only when they travel. */
const task = (id, { a, b, aKey = "j:a:0", bKey = "j:b:0", evict } = {}) => ({
  task_id: id, job_id: "j", dtype: "f32", m: 1, k: 1, n: 1, a_key: aKey, b_key: bKey,
  ...(a ? { a } : {}), ...(b ? { b } : {}), ...(evict ? { evict } : {}),
});

test("panels that come with a task are stored under their keys and returned", () => {
  const cache = new PanelCache(1000);
  const [a, b] = [panel(10, 1), panel(20, 2)];
  const t = cache.resolve(task(1, { a, b }));
  assert.equal(t.a, a);
  assert.equal(t.b, b);
  assert.equal(t.task_id, 1);
  assert.ok(cache.has("j:a:0") && cache.has("j:b:0"));
  assert.equal(cache.used, 30);
});

test("a later task that omits a panel gets the cached one by key", () => {
  const cache = new PanelCache(1000);
  const [a, b0, b1] = [panel(10, 1), panel(20, 2), panel(20, 3)];
  cache.resolve(task(1, { a, b: b0 }));
  const t = cache.resolve(task(2, { b: b1, bKey: "j:b:1" }));
  assert.equal(t.a, a, "same row of tiles: A reused");
  assert.equal(t.b, b1);
  assert.equal(new Uint8Array(t.a)[0], 1, "the cached buffer is intact");
  assert.equal(cache.size, 3);
});

test("evict applies after this task's panels are stored and resolved", () => {
  const cache = new PanelCache(1000);
  const [a0, b0, a1] = [panel(10), panel(10), panel(10)];
  cache.resolve(task(1, { a: a0, b: b0 }));
  // The server's model evicts the old A and even this task's own new one: the task still
  // gets both, and the cache keeps only what the server counts on.
  const t = cache.resolve(task(2, { a: a1, aKey: "j:a:1", evict: ["j:a:0", "j:a:1"] }));
  assert.equal(t.a, a1);
  assert.equal(t.b, b0);
  assert.ok(!cache.has("j:a:0") && !cache.has("j:a:1") && cache.has("j:b:0"));
  assert.equal(cache.used, 10);
});

test("a task naming a panel the cache lacks resolves to null and changes nothing", () => {
  const cache = new PanelCache(1000);
  const b = panel(10);
  assert.equal(cache.resolve(task(1, { b })), null, "A omitted but never received");
  assert.equal(cache.size, 0, "B is not stored for a task that is sent again anyway");
  const a = panel(10);
  cache.resolve(task(2, { a, b }));
  assert.equal(cache.resolve(task(3, { aKey: "j:a:7" })), null);
  assert.equal(cache.size, 2);
});

test("clear forgets every panel, as the server does on a new connection", () => {
  const cache = new PanelCache(1000);
  cache.resolve(task(1, { a: panel(10), b: panel(10) }));
  cache.clear();
  assert.equal(cache.size, 0);
  assert.equal(cache.used, 0);
  assert.equal(cache.resolve(task(2)), null);
});

test("a panel above the whole budget serves its task but is not kept", () => {
  const cache = new PanelCache(100);
  const t = cache.resolve(task(1, { a: panel(200), b: panel(50) }));
  assert.equal(t.a.byteLength, 200);
  assert.ok(!cache.has("j:a:0") && cache.has("j:b:0"), "the server does not count it as cached");
});

test("out of step with the server, the cache still keeps its budget, oldest first", () => {
  const cache = new PanelCache(100);
  cache.resolve(task(1, { a: panel(40), b: panel(40) }));
  cache.resolve(task(2, { aKey: "j:a:0", b: panel(40), bKey: "j:b:1" })); // no evict sent
  assert.ok(cache.used <= 100);
  assert.ok(!cache.has("j:b:0"), "the least recently used panel went");
  assert.ok(cache.has("j:a:0") && cache.has("j:b:1"));
});

test("a server without panel reuse (no keys) works as before", () => {
  const cache = new PanelCache(1000);
  const [a, b] = [panel(10), panel(10)];
  const t = cache.resolve({ task_id: 1, a, b });
  assert.equal(t.a, a);
  assert.equal(cache.size, 0);
});

test("every key that leaves, by evict, by the budget or by clear, is told to onDrop (the compute threads' copies follow it)", () => {
  const dropped = [];
  const cache = new PanelCache(30, { onDrop: (keys) => dropped.push(keys) });
  cache.resolve(task(1, { a: panel(10), b: panel(10) }));
  cache.resolve(task(2, { b: panel(10), bKey: "j:b:1", evict: ["j:b:0"] }));
  assert.deepEqual(dropped, [["j:b:0"]]);
  // Out of step with the server: the budget drops the oldest, and says so.
  cache.resolve(task(3, { a: panel(20), aKey: "j:a:1", bKey: "j:b:1" }));
  assert.deepEqual(dropped.slice(1), [["j:a:0"]]);
  cache.clear();
  assert.deepEqual(dropped.at(-1), null);
});

test("a panel moved to a compute thread stays cached, counted at its size, and is known to be gone from here", () => {
  const dropped = [];
  const cache = new PanelCache(100, { onDrop: (keys) => dropped.push(keys) });
  const [a, b] = [panel(40, 1), panel(40, 2)];
  cache.resolve(task(1, { a, b }));
  assert.equal(cache.detached("j:a:0"), false);
  structuredClone(a, { transfer: [a] }); // as postMessage with a transfer list does
  assert.equal(a.byteLength, 0);
  assert.ok(cache.has("j:a:0"), "the server still counts on it: a thread keeps it");
  assert.equal(cache.detached("j:a:0"), true);
  assert.equal(cache.detachedCount(), 1);
  assert.equal(cache.used, 80, "counted at the size it came with");
  // A later task names it; the page resolves it (the thread that keeps it needs no bytes).
  assert.ok(cache.resolve(task(2, { bKey: "j:b:0" })));
  // Past the budget, the oldest goes, at its real size, and the threads hear of it.
  cache.resolve(task(3, { a: panel(40, 3), aKey: "j:a:1" }));
  assert.ok(!cache.has("j:a:0"));
  assert.equal(cache.used, 80);
  assert.deepEqual(dropped, [["j:a:0"]]);
  assert.equal(cache.detachedCount(), 0);
  cache.clear();
  assert.equal(cache.used, 0);
});

test("coming back, the page keeps only the panels the server counts on, in the server's order", () => {
  const dropped = [];
  const cache = new PanelCache(1000, { onDrop: (keys) => dropped.push(...(keys ?? ["*"])) });
  cache.resolve(task(1, { a: panel(10), b: panel(20) }));
  cache.resolve(task(2, { b: panel(30), bKey: "j:b:1" }));
  assert.deepEqual(cache.keys(), ["j:b:0", "j:a:0", "j:b:1"], "least recently used first: what it tells the server");
  cache.keepOnly(["j:b:1", "j:a:0", "j:a:9"]);
  assert.deepEqual(cache.keys(), ["j:b:1", "j:a:0"], "a key it never held is not made up");
  assert.deepEqual(dropped, ["j:b:0"], "the threads hear of the dropped one");
  assert.equal(cache.used, 40);
  cache.keepOnly([]);
  assert.equal(cache.size, 0);
  assert.equal(cache.used, 0);
});
