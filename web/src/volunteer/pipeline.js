// The task pipeline of one page: how many `request_task` are open, which tasks wait for a
// thread, which thread computes what. Pure bookkeeping with the socket and the Web Workers
// injected (`emit`, `dispatch`), so it is unit-tested in Node with fakes.
//
// Invariant: while running and registered, open requests + queued + computing tasks stay at
// `want()` = `perThread()` per ready thread, capped by what the server allows a connection to
// hold. `perThread()` is one computing plus enough on their way to cover a request's round
// trip: a task asked for when a thread starts one must arrive before that thread finishes,
// or the thread idles. So the depth follows the measured round trip (request to
// `task_assigned`, panels included) over the measured compute time of a task: two when the
// network is quick against the kernel, more on a slow link or with quick tiles. The round
// trip that counts is the slow kind, not the average: most tasks come without panels (the
// page holds them) and one in a few brings a new one, megabytes long, and it is behind that
// one that a thread runs dry.
//
// A thread is handed up to THREAD_DEPTH tasks at once: it queues them itself and starts the
// next the moment one ends, rather than waiting for its `done` to reach this (UI) thread and
// the next task to come back, a wait the page's trace showed whenever the UI thread was busy
// receiving panels (docs/benchmarks.md).

/**
 * Tasks (leased or requested) per ready thread at least: one computing, the next waiting in
 * the thread (THREAD_DEPTH), and one on its way. With two, the request for a task went out
 * only as the task before it started, so it had one tile's compute time to arrive; a tile's
 * time varies twofold and a task bringing a 2 MiB panel takes about that long, and the thread
 * ran dry behind those (4–26 ms before each, on the 2048² benchmark; docs/benchmarks.md).
 */
export const PER_THREAD = 3;
/** At most: each task waiting here holds its panels, and the server caps a connection anyway. */
export const MAX_PER_THREAD = 6;
/**
 * A request answered later than this waited for work to exist, not for the network: it says
 * nothing of the round trip.
 */
export const WAITED_FOR_WORK_MS = 1000;
/** Weight of a new sample in the compute-time average. */
const ALPHA = 0.3;
/**
 * Per sample, how much of the slowest recent round trip is still remembered: with a new
 * panel every fourth task the peak stays within a third of that task's trip, and a link that
 * got quicker is believed after a few dozen tasks.
 */
export const PEAK_DECAY = 0.9;
/** Tasks handed to one compute thread at once: the one it computes and the one it starts next. */
export const THREAD_DEPTH = 2;
/** The server's default `MAX_TASKS_PER_WORKER`; lowered if the server says less. */
export const DEFAULT_CAP = 16;

export class TaskPipeline {
  /**
   * emit(event, payload): send on the socket.
   * dispatch(thread, task): hand `task` to the Web Worker `thread`.
   * cancel(thread, taskId): tell the Web Worker `thread` to drop `taskId`.
   * onChange(): something shown on the page changed.
   */
  constructor({ emit, dispatch, cancel = () => {}, onChange = () => {}, cap = DEFAULT_CAP, now = () => performance.now() }) {
    this.emit = emit;
    this.dispatch = dispatch;
    this.cancel = cancel;
    this.onChange = onChange;
    this.cap = cap;
    this.now = now;
    this.asked = []; // send times of the open requests, oldest first (answered in order)
    this.roundTripMs = 0; // recent peak request-to-task time, decaying (0: not measured yet)
    this.computeMs = 0; // average compute time of a task (0: not measured yet)
    this.paused = true;
    this.registered = false;
    this.epoch = 0; // bumped per connection: results of an older one are stale
    this.pending = 0; // request_task sent, task_assigned not yet received
    this.queue = []; // tasks received, waiting for a thread
    this.running = new Map(); // task_id -> {thread, task, epoch, cancelled}
    this.awaitingAck = new Map(); // task_id -> flops
    this.threads = new Map(); // thread index -> {retiring, tasks: handed to it and not done}
    this.currentJob = null;
  }

  readyThreads() {
    let n = 0;
    for (const s of this.threads.values()) if (!s.retiring) n += 1;
    return n;
  }

  /** Tasks to keep requested or in hand per thread (see the invariant above). */
  perThread() {
    return depthFor(this.roundTripMs, this.computeMs);
  }

  want() {
    if (this.paused || !this.registered) return 0;
    return Math.min(this.cap, this.perThread() * this.readyThreads());
  }

  outstanding() {
    let running = 0;
    for (const r of this.running.values()) if (r.epoch === this.epoch) running += 1;
    return this.pending + this.queue.length + running;
  }

  /** A Web Worker finished warming up and can take tasks. */
  addThread(i) {
    this.threads.set(i, { retiring: false, tasks: 0 });
    this.pump();
  }

  /**
   * Stop using thread `i`. Returns true when it can be terminated now; otherwise it is
   * retired (the caller is told through `retire`) once the tasks it holds are done.
   */
  removeThread(i) {
    const state = this.threads.get(i);
    if (state === undefined) return true;
    if (state.tasks > 0) {
      state.retiring = true;
      return false;
    }
    this.threads.delete(i);
    return true;
  }

  setPaused(paused) {
    this.paused = paused;
    this.pump();
    this.onChange();
  }

  /** Paused with nothing computing and no result waiting for its acknowledgement. */
  quiescent() {
    return this.running.size === 0 && this.awaitingAck.size === 0;
  }

  /** Work this connection still holds or has asked for (released by reconnecting). */
  holdsWork() {
    return this.pending > 0 || this.queue.length > 0;
  }

  connected() {
    this.epoch += 1;
    this.registered = false;
  }

  registeredNow() {
    this.registered = true;
    this.pump();
  }

  /**
   * The connection is gone: the server releases its leases and forgets its requests. What the
   * threads hold for it is dropped unstarted (a result could no longer be sent).
   */
  disconnected() {
    for (const [taskId, r] of this.running) {
      if (r.epoch === this.epoch && !r.cancelled) {
        r.cancelled = true;
        this.cancel(r.thread, taskId);
      }
    }
    this.registered = false;
    this.epoch += 1;
    this.pending = 0;
    this.asked = [];
    this.queue = [];
    this.awaitingAck.clear();
    this.onChange();
  }

  taskAssigned(task) {
    this.pending = Math.max(0, this.pending - 1);
    const asked = this.asked.shift();
    const roundTrip = asked === undefined ? NaN : this.now() - asked;
    this.roundTripMs = nextPeak(this.roundTripMs, roundTrip);
    this.queue.push(task);
    this.pump();
  }

  /**
   * Takes back a task waiting here that can no longer be handed to a thread as it came (a
   * panel it relies on is gone from the page): the caller asks the server for it again
   * (`panel_missing`), and its new `task_assigned` answers that as it would a request.
   */
  resend(taskId) {
    const before = this.queue.length;
    this.queue = this.queue.filter((t) => t.task_id !== taskId);
    if (this.queue.length === before) return false;
    this.pending += 1;
    // Answered at once (the server resends it as it hears of it), ahead of requests waiting
    // for work, and not a round trip worth measuring.
    this.asked.unshift(NaN);
    return true;
  }

  /** The server refused a request (`too_many_tasks`): it allows fewer; remember the limit. */
  requestRefused() {
    this.pending = Math.max(0, this.pending - 1);
    this.asked.shift();
    this.cap = Math.max(1, Math.min(this.cap, this.outstanding()));
    this.onChange();
  }

  taskCancelled(taskId) {
    this.queue = this.queue.filter((t) => t.task_id !== taskId);
    const r = this.running.get(taskId);
    if (r && !r.cancelled) {
      r.cancelled = true;
      this.cancel(r.thread, taskId);
    }
    this.pump();
  }

  /**
   * Thread `thread` finished a task. Returns what to do with the result:
   * "sent" (emitted), or "dropped" (cancelled, or from a previous connection).
   *
   * The requests that replace the task go out before its result: a result is a tile (256
   * KiB for 256² f32), and on a slow uplink a request sent after it waited behind it (0.2 s
   * at 10 Mbit/s, 1 s at 2) while the downlink idled.
   */
  taskDone(thread, taskId, c, computeMs, flops) {
    const r = this.running.get(taskId);
    this.running.delete(taskId);
    this.freeThread(thread);
    if (c && computeMs > 0) this.computeMs = average(this.computeMs, computeMs);
    const send = Boolean(r && !r.cancelled && r.epoch === this.epoch && this.registered);
    this.pump();
    if (!send) return "dropped";
    this.emit("task_result", { task_id: taskId, c, compute_ms: computeMs });
    this.awaitingAck.set(taskId, flops);
    return "sent";
  }

  /** Thread `thread` could not compute a task (bad input): the server re-queues it. */
  taskError(thread, taskId, error) {
    const r = this.running.get(taskId);
    this.running.delete(taskId);
    this.freeThread(thread);
    if (r && !r.cancelled && r.epoch === this.epoch && this.registered) {
      this.emit("task_failed", { task_id: taskId, error: String(error).slice(0, 500) });
    }
    this.pump();
  }

  /** result_ack: returns the flops of the acknowledged task (0 if unknown). */
  resultAck(taskId) {
    const flops = this.awaitingAck.get(taskId) ?? 0;
    this.awaitingAck.delete(taskId);
    this.onChange();
    return flops;
  }

  freeThread(thread) {
    const state = this.threads.get(thread);
    if (!state) return;
    state.tasks = Math.max(0, state.tasks - 1);
    if (state.retiring && state.tasks === 0) {
      this.threads.delete(thread);
      this.retire?.(thread);
    }
  }

  /** The ready thread holding the fewest tasks, if it can take one more. */
  leastBusy() {
    let best = null;
    for (const [i, s] of this.threads) {
      if (s.retiring || s.tasks >= THREAD_DEPTH) continue;
      if (best === null || s.tasks < this.threads.get(best).tasks) best = i;
    }
    return best;
  }

  /**
   * Hands queued tasks to the threads, the least busy first (so every thread computes before
   * any has one waiting), then tops up the open requests.
   */
  pump() {
    while (!this.paused && this.queue.length > 0) {
      const i = this.leastBusy();
      if (i === null) break;
      const task = this.queue.shift();
      this.threads.get(i).tasks += 1;
      this.running.set(task.task_id, { thread: i, task, epoch: this.epoch, cancelled: false });
      this.currentJob = task.job_id;
      this.dispatch(i, task);
    }
    while (this.outstanding() < this.want()) {
      this.pending += 1;
      this.asked.push(this.now());
      this.emit("request_task");
    }
    this.onChange();
  }
}

/**
 * Tasks to keep requested or in hand per compute thread, given the recent slow round trip of
 * a request (`roundTripMs`, see `PEAK_DECAY`) and a task's compute time (`computeMs`; either 0
 * when not measured yet): one computing, and enough on their way to arrive before it ends.
 * The load harness's volunteers (tests/e2e/load.mjs) size their depth by the same rule.
 */
export function depthFor(roundTripMs, computeMs) {
  if (!(roundTripMs > 0 && computeMs > 0)) return PER_THREAD;
  const onTheWay = Math.ceil(roundTripMs / computeMs);
  return Math.min(MAX_PER_THREAD, Math.max(PER_THREAD, 1 + onTheWay));
}

/**
 * The recent slow round trip after a new sample `ms`: the larger of the sample and the old
 * peak decayed; a request answered after WAITED_FOR_WORK_MS waited for work, and is not one.
 */
export function nextPeak(peakMs, ms) {
  return ms >= 0 && ms < WAITED_FOR_WORK_MS ? Math.max(ms, peakMs * PEAK_DECAY) : peakMs;
}

/** An exponentially weighted average; the first sample is taken as it is. */
function average(current, sample) {
  return current > 0 ? (1 - ALPHA) * current + ALPHA * sample : sample;
}
