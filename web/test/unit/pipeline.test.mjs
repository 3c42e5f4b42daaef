import { test } from "node:test";
import assert from "node:assert/strict";
import { TaskPipeline, depthFor, nextPeak, DEFAULT_CAP, MAX_PER_THREAD, PEAK_DECAY, PER_THREAD, THREAD_DEPTH, WAITED_FOR_WORK_MS } from "../../src/volunteer/pipeline.js";

function setup(opts = {}) {
  const sent = [];
  const dispatched = [];
  const cancelled = [];
  const p = new TaskPipeline({
    emit: (event, payload) => sent.push([event, payload]),
    dispatch: (thread, task) => dispatched.push([thread, task.task_id]),
    cancel: (thread, taskId) => cancelled.push([thread, taskId]),
    ...opts,
  });
  const requests = () => sent.filter(([e]) => e === "request_task").length;
  return { p, sent, dispatched, cancelled, requests };
}

const task = (id, job = "j1") => ({ task_id: id, job_id: job, dtype: "f32", m: 1, k: 1, n: 1 });

function running(threads) {
  const s = setup();
  for (let i = 0; i < threads; i++) s.p.addThread(i);
  s.p.connected();
  s.p.registeredNow();
  s.p.setPaused(false);
  return s;
}

test("nothing is requested before start, registration and a ready thread", () => {
  const { p, requests } = setup();
  p.addThread(0);
  p.connected();
  p.registeredNow();
  assert.equal(requests(), 0, "paused by default");
  p.setPaused(false);
  assert.equal(requests(), PER_THREAD);
  assert.equal(PER_THREAD, 3, "one computing, one waiting in the thread, one on its way");
});

test("PER_THREAD tasks per thread stay requested or in hand", () => {
  const { p, requests, dispatched } = running(3);
  const want = 3 * PER_THREAD;
  assert.equal(requests(), want);
  p.taskAssigned(task(1));
  p.taskAssigned(task(2));
  assert.deepEqual(dispatched, [[0, 1], [1, 2]]);
  assert.equal(p.outstanding(), want, "assignments replace requests, no new ones");
  assert.equal(requests(), want);
  p.taskDone(0, 1, new ArrayBuffer(4), 5, 2);
  assert.equal(requests(), want + 1, "a finished task is replaced at once");
  assert.equal(p.outstanding(), want);
});

test("a thread holds its next task, so it starts it without a round trip through the page", () => {
  const { p, dispatched, sent } = running(1);
  p.taskAssigned(task(1));
  p.taskAssigned(task(2));
  assert.equal(THREAD_DEPTH, 2);
  assert.deepEqual(dispatched, [[0, 1], [0, 2]], "the second goes to the thread at once");
  assert.equal(p.queue.length, 0);
  assert.equal(p.taskDone(0, 1, new ArrayBuffer(4), 5, 2), "sent");
  const result = sent.find(([e]) => e === "task_result")[1];
  assert.equal(result.task_id, 1);
  assert.equal(result.compute_ms, 5);
  assert.ok(result.c instanceof ArrayBuffer);
  assert.equal(p.resultAck(1), 2);
});

test("no thread holds more than its depth, and every thread computes before any holds two", () => {
  const { p, dispatched } = running(2);
  p.cap = 16;
  p.perThread = () => 4;
  p.pump();
  for (let id = 1; id <= 5; id++) p.taskAssigned(task(id));
  assert.deepEqual(dispatched, [[0, 1], [1, 2], [0, 3], [1, 4]]);
  assert.equal(p.queue.length, 1, "the fifth waits here for a thread");
  p.taskDone(1, 2, new ArrayBuffer(4), 5, 2);
  assert.deepEqual(dispatched.at(-1), [1, 5]);
});

test("the request that replaces a finished task goes out before its result", () => {
  const { p, sent } = running(1);
  p.taskAssigned(task(1));
  const before = sent.length;
  assert.equal(p.taskDone(0, 1, new ArrayBuffer(4), 5, 2), "sent");
  assert.deepEqual(
    sent.slice(before).map(([event]) => event),
    ["request_task", "task_result"],
    "behind a tile on a slow uplink, the request would wait while the downlink idles",
  );
});

test("a cancelled or stale task a thread holds is cancelled in the thread", () => {
  const { p, cancelled } = running(1);
  p.taskAssigned(task(1));
  p.taskAssigned(task(2));
  p.taskCancelled(2);
  assert.deepEqual(cancelled, [[0, 2]]);
  p.taskCancelled(2);
  assert.deepEqual(cancelled, [[0, 2]], "once");
  p.disconnected();
  assert.deepEqual(cancelled, [[0, 2], [0, 1]], "the connection's results could not be sent");
  assert.equal(p.taskDone(0, 1, null, 0, 0), "dropped");
  assert.equal(p.taskDone(0, 2, null, 0, 0), "dropped");
  assert.equal(p.quiescent(), true);
});

/** One thread on a fake clock (`clock.t`, ms). */
function timed() {
  const clock = { t: 0 };
  const s = setup({ now: () => clock.t });
  s.p.addThread(0);
  s.p.connected();
  s.p.registeredNow();
  s.p.setPaused(false);
  return { ...s, clock };
}

test("a slow round trip against a quick tile keeps more tasks on their way, up to a bound", () => {
  const { p, requests, clock } = timed();
  assert.equal(requests(), PER_THREAD);
  clock.t = 100; // both requests answered after 100 ms: the round trip
  p.taskAssigned(task(1));
  p.taskAssigned(task(2));
  p.taskDone(0, 1, new ArrayBuffer(4), 40, 2); // a 40 ms tile: 1 + ceil(100 / 40) = 4
  assert.equal(p.perThread(), 4);
  assert.equal(p.outstanding(), 4);
  assert.equal(requests(), 5, "the two first, then three to replace the one done and deepen");
  // Slower still against the kernel: the depth stops at its bound.
  for (let i = 3; i <= 30; i++) {
    clock.t += 500;
    p.taskAssigned(task(i));
    p.taskDone(0, i - 1, new ArrayBuffer(4), 1, 2);
  }
  assert.equal(p.perThread(), MAX_PER_THREAD);
  assert.equal(p.outstanding(), MAX_PER_THREAD);
});

test("a quick round trip keeps the least per thread, and a request that waited for work measures nothing", () => {
  const { p, requests, clock } = timed();
  clock.t = 5;
  p.taskAssigned(task(1));
  p.taskDone(0, 1, new ArrayBuffer(4), 40, 2);
  assert.equal(p.perThread(), PER_THREAD, "5 ms of round trip against 40 ms of tile");
  assert.equal(p.roundTripMs, 5);
  // A request that stayed open while no job had work: answered late, not slowly.
  clock.t += WAITED_FOR_WORK_MS + 4000;
  p.taskAssigned(task(2));
  assert.equal(p.roundTripMs, 5);
  assert.equal(p.perThread(), PER_THREAD);
  assert.equal(requests(), PER_THREAD + 1);
});

test("the depth covers the slow trips that bring panels, not the average, and forgets them slowly", () => {
  const { p, clock } = timed();
  p.computeMs = 8; // as a 2048-deep tile of 256 at 33 GFLOP/s
  const trip = (ms) => {
    const asked = clock.t;
    p.asked = [asked];
    p.pending = 1;
    clock.t += ms;
    p.taskAssigned(task(clock.t));
  };
  // Three quick trips (panels held), then one bringing a new 2 MiB panel: again and again.
  for (let round = 0; round < 5; round++) for (const ms of [5, 5, 5, 25]) trip(ms);
  assert.ok(p.roundTripMs >= 25 * PEAK_DECAY ** 3 - 1e-9, `${p.roundTripMs}`);
  assert.equal(p.perThread(), 1 + Math.ceil(p.roundTripMs / 8));
  assert.ok(p.perThread() >= 4, "an average (about 10 ms) would have said 3");
  // The link got quick for good: the peak decays back.
  for (let i = 0; i < 40; i++) trip(5);
  assert.equal(p.roundTripMs, 5);
  assert.equal(p.perThread(), PER_THREAD);
});

test("the depth rule the load harness shares: one computing and enough on the way, within bounds", () => {
  assert.equal(depthFor(0, 0), PER_THREAD, "nothing measured yet");
  assert.equal(depthFor(20, 100), PER_THREAD, "a quick link keeps the least");
  assert.equal(depthFor(250, 100), PER_THREAD + 1, "a trip of 2.5 tiles: 1 computing, 3 on their way");
  assert.equal(depthFor(5000, 100), MAX_PER_THREAD, "a slow link is capped");
  assert.equal(nextPeak(0, 300), 300);
  assert.equal(nextPeak(300, 100), 300 * PEAK_DECAY, "the peak decays slowly");
  assert.equal(nextPeak(300, WAITED_FOR_WORK_MS), 300, "a trip that waited for work measures nothing");
  assert.equal(nextPeak(300, NaN), 300, "nor one with no request behind it");
});

test("the server's limit caps the requests", () => {
  const { p, requests } = running(12);
  assert.equal(requests(), DEFAULT_CAP);
  p.requestRefused();
  assert.equal(p.cap, DEFAULT_CAP - 1);
  assert.equal(p.pending, DEFAULT_CAP - 1);
});

test("pause stops requests and dispatching; the connection is then released", () => {
  const { p, requests, dispatched } = running(1);
  p.taskAssigned(task(1));
  p.setPaused(true);
  p.taskAssigned(task(2));
  assert.equal(requests(), PER_THREAD);
  assert.equal(dispatched.length, 1);
  assert.equal(p.quiescent(), false, "task 1 still computes");
  p.taskDone(0, 1, new ArrayBuffer(4), 1, 1);
  assert.equal(dispatched.length, 1, "task 2 is not started while paused");
  assert.equal(requests(), PER_THREAD, "no new request while paused");
  p.resultAck(1);
  assert.equal(p.quiescent(), true);
  assert.equal(p.holdsWork(), true, "task 2 must be released by reconnecting");
  p.disconnected();
  p.connected();
  p.registeredNow();
  assert.equal(requests(), PER_THREAD);
  assert.equal(p.holdsWork(), false);
  p.setPaused(false);
  assert.equal(requests(), 2 * PER_THREAD);
});

test("after a disconnection old results are dropped and requests start over", () => {
  const { p, sent, requests } = running(1);
  p.taskAssigned(task(1));
  p.disconnected();
  assert.equal(p.pending, 0);
  p.connected();
  p.registeredNow();
  assert.equal(requests(), 2 * PER_THREAD, "the stale task no longer counts: a full set of new requests");
  assert.equal(p.taskDone(0, 1, new ArrayBuffer(4), 1, 1), "dropped");
  assert.equal(sent.filter(([e]) => e === "task_result").length, 0);
  assert.equal(requests(), 2 * PER_THREAD);
});

test("a cancelled task is dropped, queued or running", () => {
  const { p, sent } = running(1);
  p.taskAssigned(task(1));
  p.taskAssigned(task(2));
  p.taskCancelled(2);
  assert.equal(p.queue.length, 0);
  p.taskCancelled(1);
  assert.equal(p.taskDone(0, 1, new ArrayBuffer(4), 1, 1), "dropped");
  assert.equal(sent.filter(([e]) => e === "task_result").length, 0);
});

test("a task that fails in the kernel is reported for re-queuing", () => {
  const { p, sent } = running(1);
  p.taskAssigned(task(9));
  p.taskError(0, 9, "bad shape");
  assert.deepEqual(sent.find(([e]) => e === "task_failed")[1], { task_id: 9, error: "bad shape" });
});

test("fewer threads: an idle one goes now, a busy one after the tasks it holds", () => {
  const { p, requests } = running(2);
  const retired = [];
  p.retire = (i) => retired.push(i);
  p.taskAssigned(task(1)); // to thread 0
  p.taskAssigned(task(2)); // to thread 1
  p.taskAssigned(task(3)); // to thread 0, after task 1
  assert.equal(p.removeThread(1), false);
  assert.equal(p.removeThread(0), false);
  assert.equal(p.readyThreads(), 0);
  assert.equal(p.want(), 0);
  p.taskDone(1, 2, new ArrayBuffer(4), 1, 1);
  assert.deepEqual(retired, [1]);
  p.taskDone(0, 1, new ArrayBuffer(4), 1, 1);
  assert.deepEqual(retired, [1], "thread 0 still holds task 3");
  p.taskDone(0, 3, new ArrayBuffer(4), 1, 1);
  assert.deepEqual(retired, [1, 0]);
  assert.equal(requests(), 2 * PER_THREAD, "no requests beyond what was asked before");
  assert.equal(p.removeThread(5), true, "a thread never added");
});

test("a waiting task taken back to be sent again counts as a request until it comes back", () => {
  const { p, requests, dispatched } = running(1);
  p.taskAssigned(task(1)); // to the thread
  p.taskAssigned(task(2)); // held by the thread too
  p.cap = 16;
  p.perThread = () => 3;
  p.pump();
  assert.equal(requests(), 3);
  p.taskAssigned(task(3)); // waits here: the thread holds two
  assert.equal(p.queue.length, 1);
  assert.equal(p.resend(3), true);
  assert.equal(p.resend(3), false, "once");
  assert.equal(p.queue.length, 0);
  assert.equal(p.outstanding(), 3, "still counted, as an open request");
  assert.equal(requests(), 3, "no extra request for it");
  const before = p.roundTripMs;
  p.taskAssigned(task(3)); // the server sends it again, with its panels
  assert.equal(p.pending, 0);
  assert.equal(p.roundTripMs, before, "a resend is not a round trip");
  assert.equal(p.asked.length, 0);
  p.taskDone(0, 1, new ArrayBuffer(4), 5, 2);
  assert.deepEqual(dispatched.at(-1), [0, 3]);
});
