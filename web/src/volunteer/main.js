// The volunteer page. Design (one connection per page): a single Socket.io connection lives
// on this UI thread, which never computes, so it always answers the server's pings and
// heartbeats on time; N dedicated Web Workers compute, each with its own worker-wasm
// instance, and each keeps in it the panels it was sent, so a panel crosses to a thread once,
// not once per tile (the page's panel cache keeps the originals). The pipeline keeps enough
// tasks per thread requested or in hand to cover the measured round trip (pipeline.js), so no
// thread waits on the network. A server named by the link (`?server=`) is used only once the person confirms it: until then
// the page cannot start (see common/server-prompt.js).

import { io } from "socket.io-client";
import { detectFeatures, pickVariant, VARIANT_LABELS } from "./features.js";
import { loadWasm } from "./wasm-loader.js";
import { TaskPipeline } from "./pipeline.js";
import { PanelCache } from "./panels.js";
import { DUTY_CHOICES, parseDuty } from "./duty.js";
import { MIB, affordableCache, chosenCacheMib } from "./cache-budget.js";
import { VolunteerStats } from "./stats.js";
import { load, save, serverChoice, confirmServer, pageServer, normaliseServerUrl, withoutServerParam } from "../common/settings.js";
import { askToUseServer } from "../common/server-prompt.js";
import { formatGflops, formatCount } from "../common/format.js";
import { fetchGrid, formatGridSpeed } from "../common/grid.js";
import { CreditApi, UnreadCredit, drawHistory, showProfile, profileHref, transferLink, transferCodeFromHash, cleanTransferCode } from "../common/credit.js";

/** Filled in by build.mjs: each shipped kernel build with its file name and SHA-256. */
const MANIFEST = __BRAIN_WASM__; // eslint-disable-line no-undef

const $ = (id) => document.getElementById(id);
const cores = Math.max(1, navigator.hardwareConcurrency || 2);

/** The panel cache sizes this device can afford (cache-budget.js), from what the browser says. */
const affordable = affordableCache(navigator.deviceMemory);

const choice = serverChoice();
const settings = {
  /**
   * MiB of panels the page keeps between tiles and announces at `register_worker`: every tile
   * in a row of C shares its A panel (likewise a column its B panel), so a cache saves the
   * link those bytes; the server plans it exactly (server/src/panels.rs).
   */
  cacheMib: chosenCacheMib(load("cache-mib", null), affordable),
  threads: clampThreads(Number(load("threads", Math.max(1, Math.floor(cores / 2))))),
  duty: parseDuty(load("duty", "1")),
  /** The server's origin: the one chosen before, or the page's own; never an unconfirmed one. */
  server: choice.current,
};

function clampThreads(n) {
  return Number.isInteger(n) ? Math.min(cores, Math.max(1, n)) : Math.max(1, Math.floor(cores / 2));
}

const stats = new VolunteerStats();
const ui = {
  phase: "idle", // idle | loading | running | paused | error
  connection: "not connected",
  kernel: null,
  checkedBy: null,
  grid: null,
  workerId: null,
  visible: document.visibilityState !== "hidden",
  onBattery: false,
  batteryDismissed: false,
  quarantined: null,
  job: null, // {id, name, tasks_done, tasks_total, status}
  requestsSent: 0,
  /** Connections made since the page loaded: more than one means it came back after a loss. */
  connects: 0,
  /** Running with no work in hand: the moment the credit figures are read again. */
  idle: false,
  /** The origin a link proposes and the person has not yet answered: nothing starts meanwhile. */
  serverPending: choice.proposed,
};

let socket = null;
let heartbeatTimer = null;
let wasm = null; // {variant, module}
const workers = []; // index -> Worker
let releasing = false;
/** Per thread, the panel keys that thread keeps in its wasm memory (worker-wasm/src/thread.rs). */
const threadPanels = [];
const panels = new PanelCache(settings.cacheMib * MIB, { onDrop: forgetPanels });

/**
 * What the page's cache drops, each thread drops too: a thread keeps only panels this cache
 * holds, so its copies stay within the same budget.
 */
function forgetPanels(keys) {
  for (const [thread, held] of threadPanels.entries()) {
    if (!held?.size || !workers[thread]) continue;
    if (keys === null) {
      held.clear();
      workers[thread].postMessage({ type: "forget_all" });
      continue;
    }
    const gone = keys.filter((key) => held.delete(key));
    if (gone.length) workers[thread].postMessage({ type: "forget", keys: gone });
  }
}

/**
 * Hands `task` to `thread`. A panel this page's cache holds goes to a thread once, to be kept
 * there (`a_keep`), and later tasks only name it. It is copied (cloned) while other threads
 * may still need it, and moved (transferred: no copy on either side) to the last thread that
 * lacks it, after which the page keeps only its key: handing a thread a 2 MiB panel cost it
 * 2.5–4 ms, most of it the clone (docs/benchmarks.md). A panel not cached here is cloned: a
 * later tile of the same task (after `panel_missing`) may still need it.
 */
function handTask(thread, task) {
  const held = threadPanels[thread] ?? (threadPanels[thread] = new Set());
  const message = { ...task };
  const transfer = [];
  for (const operand of ["a", "b"]) {
    const key = task[`${operand}_key`];
    if (key === undefined || !panels.has(key)) continue;
    if (held.has(key)) {
      message[operand] = undefined;
      continue;
    }
    held.add(key);
    message[`${operand}_keep`] = true;
    const othersKeep = workers.every((w, other) => !w || other === thread || threadPanels[other]?.has(key));
    if (othersKeep && !panels.detached(key)) transfer.push(message[operand]);
  }
  workers[thread].postMessage({ type: "task", task: message }, transfer);
}

/**
 * A panel the page moved to a thread cannot be handed to a new one. So before a thread joins,
 * the page's cache starts afresh (the threads forget theirs too; tasks they hold keep what
 * they named), and the tasks waiting here that relied on a moved panel are asked for again
 * with their panels (`panel_missing`); later tasks that name a panel the page no longer has
 * do the same as they arrive, and the server resets its model of this cache.
 */
function startPanelsAfresh() {
  const moved = pipeline.queue.filter((t) => [t.a, t.b].some((p) => p instanceof ArrayBuffer && p.byteLength === 0));
  panels.clear();
  for (const task of moved) {
    if (pipeline.resend(task.task_id)) socket?.emit("panel_missing", { task_id: task.task_id });
  }
}

const pipeline = new TaskPipeline({
  emit: (event, payload) => {
    if (!socket) return;
    if (event === "request_task") ui.requestsSent += 1;
    if (event === "task_result") credit.unread.sent(payload.task_id);
    if (payload === undefined) socket.emit(event);
    else socket.emit(event, payload);
  },
  dispatch: (thread, task) => handTask(thread, task),
  cancel: (thread, taskId) => workers[thread]?.postMessage({ type: "cancel", task_id: taskId }),
  onChange: () => scheduleRender(),
});
pipeline.retire = (thread) => terminate(thread);

// ---------------------------------------------------------------------------------------
// Compute threads

async function ensureWasm() {
  if (wasm) return wasm;
  const available = Object.keys(MANIFEST.variants);
  const variant = pickVariant(detectFeatures(), available);
  if (!variant) throw new Error("this browser cannot run WebAssembly");
  const { module, checkedBy } = await loadWasm(MANIFEST.variants[variant], location.href);
  wasm = { variant, module };
  ui.kernel = { variant, label: VARIANT_LABELS[variant] };
  ui.checkedBy = checkedBy;
  return wasm;
}

function spawn(thread) {
  if (panels.detachedCount() > 0) startPanelsAfresh();
  const worker = new Worker(new URL("./compute-worker.js", document.baseURI));
  workers[thread] = worker;
  threadPanels[thread] = new Set();
  worker.onmessage = (event) => onWorkerMessage(thread, event.data);
  worker.onerror = (event) => {
    log(`thread ${thread + 1} crashed: ${event.message ?? "unknown error"}`);
    terminate(thread);
  };
  // memory_bytes: the thread faults in memory for the panels it will keep, within the cache's budget.
  worker.postMessage({ type: "init", variant: wasm.variant, module: wasm.module, duty: settings.duty, thread, memory_bytes: settings.cacheMib * MIB });
}

function terminate(thread) {
  workers[thread]?.terminate();
  workers[thread] = undefined;
  threadPanels[thread] = undefined;
  stats.forgetThread(thread);
  pipeline.removeThread(thread);
  scheduleRender();
}

function onWorkerMessage(thread, msg) {
  switch (msg.type) {
    case "ready":
      if (msg.info?.variant && ui.kernel) ui.kernel.reported = msg.info.variant;
      if (msg.info?.version && ui.kernel) ui.kernel.version = msg.info.version;
      if (msg.gflops > 0) stats.recordCompute(thread, msg.gflops * 1e6, 1);
      if (thread < settings.threads) pipeline.addThread(thread);
      else terminate(thread);
      break;
    case "done":
      if (msg.c && msg.compute_ms > 0) stats.recordCompute(thread, msg.flops, msg.compute_ms);
      if (pipeline.taskDone(thread, msg.task_id, msg.c, msg.compute_ms, msg.flops) === "sent") {
        maybeHeartbeat();
      }
      releaseIfPaused();
      break;
    case "error":
      log(`task ${msg.task_id} failed: ${msg.error}`);
      stats.failed += 1;
      pipeline.taskError(thread, msg.task_id, msg.error);
      releaseIfPaused();
      break;
    case "fatal":
      log(`thread ${thread + 1} could not start: ${msg.error}`);
      ui.phase = "error";
      terminate(thread);
      break;
  }
}

function applyThreads() {
  if (!wasm) return;
  for (let i = 0; i < settings.threads; i++) if (!workers[i]) spawn(i);
  for (let i = settings.threads; i < workers.length; i++) {
    if (workers[i] && pipeline.removeThread(i)) terminate(i);
  }
  pipeline.pump();
}

// ---------------------------------------------------------------------------------------
// The connection

function tokenKey() {
  return `token.${settings.server}`;
}

/** Set by `server_shutdown`: the pause before coming back, in ms (0: not restarting). */
let restartingMs = 0;

function connect() {
  socket?.removeAllListeners();
  socket?.io.removeAllListeners();
  socket?.disconnect();
  pipeline.disconnected();
  panels.clear();
  ui.connection = "connecting";
  socket = io(settings.server, {
    transports: ["websocket"],
    reconnection: true,
    reconnectionDelay: 500,
    reconnectionDelayMax: 5000,
    randomizationFactor: 0.5,
  });
  socket.on("connect", () => {
    ui.connects += 1;
    restartingMs = 0;
    ui.connection = "connected";
    pipeline.connected();
    credit.unread.connected();
    // The server models this page's cache per connection: coming back after a lost one, the
    // page says what it still holds, and the server says which of those it counts on.
    const token = load(tokenKey(), "");
    socket.emit("register_worker", {
      name: "web volunteer",
      threads: settings.threads,
      user_agent: navigator.userAgent,
      panel_cache: { budget_bytes: settings.cacheMib * MIB, holds: panels.keys() },
      ...(token ? { token } : {}),
    });
    scheduleRender();
  });
  socket.on("registration_ack", (ack) => {
    // A server that does not say which panels it counts on starts this page's cache afresh.
    if (Array.isArray(ack.panels_kept)) panels.keepOnly(ack.panels_kept.filter((k) => typeof k === "string"));
    else panels.clear();
    ui.workerId = ack.worker_id;
    if (ack.token) save(tokenKey(), ack.token);
    refreshCredit(true);
    ui.quarantined = ack.quarantined ?? null;
    clearInterval(heartbeatTimer);
    const every = Math.max(100, Number(ack.heartbeat_interval_ms) || 10000);
    heartbeatTimer = setInterval(() => heartbeat(), every);
    heartbeat.every = every;
    sendStatus();
    if (!ui.quarantined) pipeline.registeredNow();
    releaseIfPaused();
    scheduleRender();
  });
  socket.on("heartbeat_ack", () => {});
  socket.on("task_assigned", (sent) => {
    if ([sent.a, sent.b].some((p) => p != null && !(p instanceof ArrayBuffer))) {
      log(`task ${sent.task_id} arrived without binary operands`);
      socket.emit("task_failed", { task_id: sent.task_id, error: "operands were not binary" });
      return;
    }
    const task = panels.resolve(sent);
    if (!task) {
      // The server resends the task in full and resets its model of this cache; so does this
      // page. The request stays open until the task comes again.
      log(`task ${sent.task_id} named a panel this page does not hold; asked for it again`);
      panels.clear();
      socket.emit("panel_missing", { task_id: sent.task_id });
      return;
    }
    pipeline.taskAssigned(task);
    releaseIfPaused();
  });
  socket.on("result_ack", ({ task_id, accepted, reason }) => {
    const flops = pipeline.resultAck(task_id);
    stats.recordAck(accepted, flops);
    if (accepted) credit.counted(task_id, flops);
    else credit.unread.refused(task_id);
    if (!accepted) log(`result for task ${task_id} refused: ${reason ?? "no reason given"}`);
    releaseIfPaused();
  });
  socket.on("task_cancelled", ({ task_id }) => {
    pipeline.taskCancelled(task_id);
  });
  socket.on("grid_stats", (g) => {
    ui.grid = g;
    scheduleRender();
  });
  socket.on("protocol_error", ({ code, message }) => {
    if (code === "too_many_tasks") pipeline.requestRefused();
    else log(`server: ${message} (${code})`);
  });
  socket.on("quarantined", ({ reason }) => {
    ui.quarantined = reason;
    pipeline.registered = false;
    log(`the server stopped sending work: ${reason}`);
    scheduleRender();
  });
  // A deploy or a scale-down: this server is going, and another (behind the same address)
  // takes the page back. Not an error: the page says so and comes back by itself.
  socket.on("server_shutdown", ({ reconnect_ms } = {}) => {
    restartingMs = Math.min(Math.max(Number(reconnect_ms) || 1000, 100), 30_000);
    ui.connection = "server restarting; reconnecting";
    scheduleRender();
  });
  socket.on("disconnect", (reason) => {
    clearInterval(heartbeatTimer);
    pipeline.disconnected();
    // The panels stay: the next registration says which the server still counts on.
    if (releasing) return;
    // The server closing the connection on purpose stops socket.io's automatic retries;
    // a volunteer still wants to come back, after a pause with jitter: the server's own
    // figure when it said it was restarting (spread over twice that, so that its pages do
    // not all arrive at once), else 2–5 s.
    const restarting = restartingMs;
    ui.connection = restarting ? "server restarting; reconnecting" : "disconnected";
    if (reason === "io server disconnect") {
      const pause = restarting ? restarting * (1 + Math.random()) : 2000 + Math.random() * 3000;
      setTimeout(() => socket && !socket.connected && socket.connect(), pause);
    }
    scheduleRender();
  });
  socket.io.on("reconnect_attempt", (attempt) => {
    ui.connection = `reconnecting (attempt ${attempt})`;
    scheduleRender();
  });
  socket.on("connect_error", (err) => {
    ui.connection = restartingMs ? "server restarting; reconnecting" : `cannot reach the server (${err.message}); retrying`;
    scheduleRender();
  });
}

function heartbeat() {
  if (socket?.connected && pipeline.registered) {
    socket.emit("heartbeat");
    heartbeat.last = performance.now();
  }
}

/** Background tabs get their timers throttled; results are a chance to send one anyway. */
function maybeHeartbeat() {
  if (heartbeat.every && performance.now() - (heartbeat.last ?? 0) > heartbeat.every) heartbeat();
}

function sendStatus() {
  if (socket?.connected) socket.emit("worker_status", { visible: ui.visible, on_battery: ui.onBattery });
}

/**
 * Once paused and nothing computes, reconnect if this connection still holds leased tasks or
 * open requests: the server forgets a departed connection's requests and re-queues its
 * leases at once (no failure counted, unlike `task_failed`), so a paused page gets no work.
 */
function releaseIfPaused() {
  if (!pipeline.paused || releasing || !socket?.connected) return;
  if (!pipeline.quiescent() || !pipeline.holdsWork()) return;
  releasing = true;
  socket.disconnect();
  pipeline.disconnected();
  releasing = false;
  socket.connect();
}

// ---------------------------------------------------------------------------------------
// Controls

async function start() {
  if (ui.phase === "loading" || ui.serverPending) return;
  if (ui.phase === "running") {
    ui.phase = "paused";
    stats.contributing(null);
    pipeline.setPaused(true);
    releaseIfPaused();
    return;
  }
  try {
    ui.phase = "loading";
    scheduleRender();
    await ensureWasm();
    ui.phase = "running";
    stats.contributing(performance.now());
    applyThreads();
    if (!socket) connect();
    pipeline.setPaused(Boolean(ui.quarantined));
  } catch (e) {
    ui.phase = "error";
    stats.contributing(null);
    log(String(e?.message ?? e));
  }
  scheduleRender();
}

function setThreads(n) {
  settings.threads = clampThreads(n);
  save("threads", settings.threads);
  applyThreads();
  scheduleRender();
}

/**
 * The server plans a page's cache from what it announced when it registered: a new size
 * takes effect on a new connection, made at once if the page is connected.
 */
function setCache(mib) {
  settings.cacheMib = chosenCacheMib(mib, affordable);
  save("cache-mib", settings.cacheMib);
  panels.budget = settings.cacheMib * MIB;
  if (socket) connect();
  scheduleRender();
}

function setDuty(d) {
  settings.duty = parseDuty(d);
  save("duty", settings.duty);
  for (const w of workers) w?.postMessage({ type: "duty", duty: settings.duty });
  scheduleRender();
}

function setServer(input) {
  if (ui.serverPending) {
    $("server-error").textContent = "First answer the question about the link's server, above.";
    return;
  }
  const url = input.trim() === "" ? pageServer() : normaliseServerUrl(input, location.protocol);
  if (!url) {
    $("server-error").textContent = "That is not an http(s) address.";
    return;
  }
  $("server-error").textContent = "";
  // Typed by the person on this page: that is their choice, no further question.
  settings.server = confirmServer(url);
  ui.job = null;
  ui.grid = null;
  credit.forget();
  refreshGrid();
  refreshCredit(true);
  updateDashboardLink();
  if (socket) connect();
  scheduleRender();
}

/** Asks about the server the link proposes; the page stays on its current one unless confirmed. */
async function answerServerProposal() {
  if (ui.serverPending) {
    const proposed = ui.serverPending;
    const yes = await askToUseServer({
      proposed,
      current: settings.server,
      consequence: "When you press start, this browser would compute tiles for that server and send it the results.",
    });
    if (yes) settings.server = confirmServer(proposed);
    ui.serverPending = null;
    $("server").value = settings.server === pageServer() ? "" : settings.server;
    updateDashboardLink();
  }
  if (choice.proposed || choice.invalid) history.replaceState(history.state, "", withoutServerParam(location.href));
  if (choice.invalid) log(`the link named a server that is not an http(s) address; using ${settings.server}`);
  scheduleRender();
}

function updateDashboardLink() {
  const dash = new URL("dashboard", document.baseURI);
  if (settings.server !== pageServer()) dash.searchParams.set("server", settings.server);
  $("dashboard-link").href = dash.pathname + dash.search;
}

// ---------------------------------------------------------------------------------------
// Page state

document.addEventListener("visibilitychange", () => {
  ui.visible = document.visibilityState !== "hidden";
  sendStatus();
  scheduleRender();
});

navigator.getBattery?.().then((battery) => {
  const update = () => {
    ui.onBattery = !battery.charging;
    if (!ui.onBattery) ui.batteryDismissed = false;
    sendStatus();
    scheduleRender();
  };
  battery.addEventListener("chargingchange", update);
  update();
}).catch(() => {});

const events = [];
function log(text) {
  events.unshift(`${new Date().toLocaleTimeString()} ${text}`);
  events.length = Math.min(events.length, 8);
  scheduleRender();
}

let jobFetched = 0;
async function refreshJob() {
  const id = pipeline.currentJob;
  if (!id || (ui.job?.id === id && performance.now() - jobFetched < 5000)) return;
  jobFetched = performance.now();
  try {
    const res = await fetch(`${settings.server}/api/jobs/${encodeURIComponent(id)}`);
    if (res.ok) ui.job = await res.json();
  } catch {
    // Shown again on the next refresh; the job line is informative only.
  }
}

let renderQueued = false;
/**
 * Redraws at most every RENDER_MS: the figures change with every task, and redrawing on each
 * animation frame took a sixth of the UI thread's time during a job (docs/benchmarks.md, the
 * page's trace), time the thread that receives the panels and sends the results lacked.
 */
const RENDER_MS = 250;
let lastRender = -Infinity;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  const wait = Math.max(0, lastRender + RENDER_MS - performance.now());
  setTimeout(() => {
    requestAnimationFrame(() => {
      renderQueued = false;
      lastRender = performance.now();
      render();
    });
  }, wait);
}

function render() {
  const running = ui.phase === "running";
  const button = $("start");
  button.textContent = { idle: "Start contributing", loading: "Loading…", running: "Pause", paused: "Resume", error: "Try again" }[ui.phase];
  button.disabled = ui.phase === "loading" || Boolean(ui.serverPending);
  const phaseText = {
    idle: "Not started: nothing runs until you press start.",
    loading: "Loading the compute kernel…",
    running: pipeline.quiescent() && pipeline.queue.length === 0 ? "Running: waiting for work." : "Running: computing tiles.",
    paused: pipeline.quiescent() ? "Paused: no work is requested." : "Pausing: finishing the tiles in hand…",
    error: "Stopped by an error (see the log).",
  }[ui.phase];
  $("phase").textContent = ui.serverPending
    ? "Not started: first choose the server (above)."
    : ui.quarantined ? `Stopped by the server: ${ui.quarantined}` : phaseText;
  $("phase").dataset.phase = ui.phase;
  $("connection").textContent = socket ? ui.connection : "not connected";
  $("connection").dataset.state = socket?.connected ? "connected" : "disconnected";
  $("server-shown").textContent = settings.server;
  $("kernel").textContent = ui.kernel
    ? `${ui.kernel.label}${ui.kernel.version ? ` · v${ui.kernel.version}` : ""} · checked by ${ui.checkedBy}`
    : "not loaded";
  $("kernel").dataset.variant = ui.kernel?.variant ?? "";
  $("tasks-done").textContent = formatCount(stats.accepted);
  $("tasks-other").textContent = stats.refused || stats.failed ? ` (${stats.refused} refused, ${stats.failed} failed)` : "";
  const per = stats.perThreadGflops();
  $("speed-thread").textContent = formatGflops(per);
  $("speed-thread").dataset.gflops = per.toFixed(3);
  $("speed-total").textContent = formatGflops(per * pipeline.readyThreads() * settings.duty);
  const effective = stats.effectiveGflops();
  $("speed-effective").textContent = stats.since === null ? "–" : effective > 0 ? formatGflops(effective) : "0 GFLOP/s";
  $("speed-effective").dataset.gflops = effective.toFixed(3);
  $("pipeline").textContent = `${pipeline.running.size} computing · ${pipeline.queue.length} waiting · ${pipeline.pending} requested`;
  const job = ui.job;
  $("job").textContent = job ? `${job.name || job.id.slice(0, 8)} · ${job.m}×${job.k}·${job.k}×${job.n} ${job.dtype} · ${job.tasks_done}/${job.tasks_total} tiles` : "none yet";
  const g = ui.grid;
  $("grid-workers").textContent = g ? formatCount(g.workers_online) : "–";
  $("grid-speed").textContent = g ? formatGridSpeed(g) : "–";
  $("grid-jobs").textContent = g ? formatCount(g.jobs_running) : "–";
  $("threads-value").textContent = `${settings.threads} of ${cores}`;
  $("background-note").hidden = ui.visible || !running;
  $("battery-banner").hidden = !(ui.onBattery && running && !ui.batteryDismissed);
  $("log").replaceChildren(...events.map((e) => Object.assign(document.createElement("li"), { textContent: e })));
  if (credit.unread.tiles) showCreditFigures();
  // When the work runs out, the figures settle: read them again, so that a tile whose
  // acknowledgement a lost connection took is counted as the server counted it.
  const idle = running && pipeline.quiescent() && pipeline.queue.length === 0;
  if (idle && !ui.idle && performance.now() - credit.readAt > IDLE_REREAD_MS) refreshCredit(true);
  ui.idle = idle;
  refreshJob();
}

function setup() {
  const threads = $("threads");
  for (let i = 1; i <= cores; i++) threads.append(new Option(String(i), String(i)));
  threads.value = String(settings.threads);
  threads.addEventListener("change", () => setThreads(Number(threads.value)));
  const cache = $("cache");
  for (const mib of affordable.choices) cache.append(new Option(mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`, String(mib)));
  cache.value = String(settings.cacheMib);
  cache.addEventListener("change", () => setCache(Number(cache.value)));
  $("cache-afford").textContent = navigator.deviceMemory
    ? `This device says it has about ${navigator.deviceMemory} GB of memory: up to ${affordable.choices.at(-1)} MiB is offered.`
    : `This browser does not say how much memory the device has: up to ${affordable.choices.at(-1)} MiB is offered.`;
  const dutyBox = $("duty");
  for (const d of DUTY_CHOICES) {
    const id = `duty-${d * 100}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    const input = Object.assign(document.createElement("input"), { type: "radio", name: "duty", id, value: String(d) });
    input.checked = Math.abs(d - settings.duty) < 1e-9;
    input.addEventListener("change", () => setDuty(d));
    label.append(input, ` ${d * 100} %`);
    dutyBox.append(label);
  }
  $("start").addEventListener("click", start);
  $("battery-pause").addEventListener("click", () => {
    if (ui.phase === "running") start();
  });
  $("battery-dismiss").addEventListener("click", () => {
    ui.batteryDismissed = true;
    scheduleRender();
  });
  $("server").value = settings.server === pageServer() ? "" : settings.server;
  $("server").placeholder = pageServer();
  $("server-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setServer($("server").value);
  });
  updateDashboardLink();
  setInterval(scheduleRender, 1000);
  $("me-form").addEventListener("submit", saveMe);
  $("transfer-issue").addEventListener("click", issueTransfer);
  $("transfer-form").addEventListener("submit", redeemTransfer);
  render();
  renderCredit();
  answerServerProposal().then(() => {
    refreshGrid();
    setInterval(refreshGrid, GRID_REFRESH_MS);
    refreshCredit(true);
    setInterval(refreshCredit, CREDIT_REFRESH_MS);
    offerTransferFromLink();
  });
}

// ---------------------------------------------------------------------------------------
// Credit (#15, docs/credit.md): this browser's identity is the worker token it keeps per
// server; the server counts its verified work.

/**
 * How often the page reads its credit while it runs. Between reads it adds the tiles the
 * server acknowledged, so the figures move with the work. A read is a profile and a rank
 * (1–10 ms among 100,000 volunteers, docs/benchmarks.md): 100,000 pages reading every minute
 * would ask the server 1,700 times a second for figures that change slowly.
 */
const CREDIT_REFRESH_MS = 5 * 60_000;

/** The least time between reads of the credit when the page runs out of work. */
const IDLE_REREAD_MS = 5000;

/** How soon after its first verified tile a volunteer's rank is read. */
const RANK_SOON_MS = 2000;

/** How soon a read follows one that acknowledged results may be missing from (`UnreadCredit`). */
const SETTLE_MS = 3000;

const credit = {
  rankSoon: null,
  settleSoon: null,
  /** `GET /api/me`'s answer for the current server's token; null before there is one. */
  profile: null,
  /** Why there is none, when the server said. */
  problem: null,
  /** What is added on top of the profile until the next read. */
  unread: new UnreadCredit(),
  readAt: -Infinity,
  /** The form shows the saved name and team until the person edits it. */
  formFilled: false,
  counted(taskId, flops) {
    if (!this.unread.accepted(taskId, flops) && this.unread.wantsRead && !this.settleSoon) {
      this.unread.settling();
      this.settleSoon = setTimeout(() => {
        this.settleSoon = null;
        refreshCredit(true, true);
      }, SETTLE_MS);
    }
    // A first tile puts the volunteer on the board: its rank is read soon, not in a minute.
    if (this.profile && this.profile.rank == null && !this.rankSoon) {
      this.rankSoon = setTimeout(() => {
        this.rankSoon = null;
        refreshCredit(true);
      }, RANK_SOON_MS);
    }
  },
  forget() {
    clearTimeout(this.settleSoon);
    this.unread.forget();
    Object.assign(this, { profile: null, problem: null, settleSoon: null, readAt: -Infinity, formFilled: false });
  },
};

function creditApi() {
  return new CreditApi(settings.server);
}

/** Before start only the page's own server hears from this browser, as for the grid's figures. */
function mayAskServer() {
  return !ui.serverPending && (Boolean(socket) || settings.server === pageServer());
}

/** Reads the volunteer's credit; `settling`: the read that follows one soon after (see `credit`). */
async function refreshCredit(now = false, settling = false) {
  const token = load(tokenKey(), "");
  if (!token || !mayAskServer()) return renderCredit();
  if (!now && performance.now() - credit.readAt < CREDIT_REFRESH_MS / 2) return;
  credit.readAt = performance.now();
  const asked = settings.server;
  try {
    const profile = await creditApi().me(token);
    if (settings.server !== asked) return;
    credit.profile = profile;
    credit.problem = null;
    credit.unread.answered(settling);
  } catch (e) {
    if (settings.server !== asked) return;
    credit.profile = e.status === 401 ? null : credit.profile;
    credit.problem = e.status === 401
      ? "This server does not know this browser's identity (its data may have been reset): starting gives it a new one."
      : e.status === 403 ? e.message : `Could not read your credit: ${e.message}`;
  }
  renderCredit();
}

function renderCredit() {
  const token = load(tokenKey(), "");
  const p = credit.profile;
  $("credit-note").textContent = credit.problem
    ?? (p
      ? "Credit is work the server verified, in GFLOP (billions of operations), kept for this browser's identity: close the tab and it is here when you come back."
      : token
        ? "Reading your credit…"
        : "Credit is work the server verified, in GFLOP (billions of operations). It belongs to an identity this browser keeps: none yet, until you start once.");
  $("credit-note").className = credit.problem ? "error" : "hint";
  $("me-save").disabled = !token;
  $("transfer-issue").disabled = !token;
  $("profile-line").hidden = !p;
  if (!p) return;
  showCreditFigures();
  drawHistory($("credit-chart"), p.history);
  $("profile-link").href = profileHref(p.id, settings.server, pageServer(), document.baseURI);
  if (!credit.formFilled) {
    $("me-name").value = p.anonymous ? "" : p.name;
    $("me-team").value = p.team ?? "";
    credit.formFilled = true;
  }
}

/** The figures as read, plus the tiles acknowledged since. */
function showCreditFigures() {
  const p = credit.profile;
  if (!p) return;
  const u = credit.unread.gflop;
  showProfile($("credit-figures"), {
    ...p,
    credit_today: p.credit_today + u,
    credit_week: p.credit_week + u,
    credit_all_time: p.credit_all_time + u,
    tiles: p.tiles + credit.unread.tiles,
  });
}

function formStatus(id, text, error = false) {
  $(id).textContent = text;
  $(id).className = error ? "error" : "";
}

async function saveMe(event) {
  event.preventDefault();
  const token = load(tokenKey(), "");
  if (!token) return formStatus("me-status", "Start once first: the server gives this browser its identity then.", true);
  const name = $("me-name").value.trim() || null;
  const team = $("me-team").value.trim() || null;
  try {
    credit.profile = await creditApi().setMe(token, { name, team });
    credit.formFilled = false;
    formStatus("me-status", `Saved: shown as “${credit.profile.name}”${credit.profile.team ? `, in team “${credit.profile.team}”` : ", in no team"}.`);
    renderCredit();
  } catch (e) {
    formStatus("me-status", `Not saved: ${e.message}`, true);
  }
}

async function issueTransfer() {
  const token = load(tokenKey(), "");
  if (!token) return;
  try {
    const { code, expires_in_s: seconds } = await creditApi().issueTransfer(token);
    const page = new URL(document.baseURI);
    page.search = "";
    if (settings.server !== pageServer()) page.searchParams.set("server", settings.server);
    const link = transferLink(code, page.href);
    $("transfer-code").textContent = code;
    $("transfer-link").textContent = link;
    $("transfer-link").href = link;
    $("transfer-shown").hidden = false;
    formStatus("transfer-status", `The code works once, for ${Math.round((seconds || 600) / 60)} minutes.`);
  } catch (e) {
    formStatus("transfer-status", `No code: ${e.message}`, true);
  }
}

async function redeemTransfer(event) {
  event.preventDefault();
  const code = cleanTransferCode($("transfer-input").value);
  if (!code) return formStatus("transfer-status", "A code is 10 letters and digits, written XXXXX-XXXXX.", true);
  try {
    const { token } = await creditApi().redeemTransfer(code);
    if (typeof token !== "string" || !/^[0-9A-Za-z_-]{32,128}$/.test(token)) throw new Error("the server's answer held no identity");
    save(tokenKey(), token);
    $("transfer-input").value = "";
    credit.forget();
    formStatus("transfer-status", "Done: this browser now has that identity and earns for it.");
    // A running page registers again, as the identity it now has.
    if (socket) connect();
    refreshCredit(true);
  } catch (e) {
    formStatus("transfer-status", `Not moved: ${e.message}`, true);
  }
}

/**
 * A transfer link (`#transfer=CODE`) only fills the form: the person decides to use it, since
 * a link is written by whoever sent it. The fragment is never sent to any server by the
 * browser, and it is removed from the address at once.
 */
function offerTransferFromLink() {
  if (!location.hash.startsWith("#transfer=")) return;
  const code = transferCodeFromHash(location.hash);
  history.replaceState(history.state, "", location.pathname + location.search);
  $("transfer").open = true;
  if (!code) return formStatus("transfer-status", "The link's code is not a transfer code.", true);
  $("transfer-input").value = code;
  formStatus("transfer-status", "The link gave this code: press “Use it” to move that identity into this browser.");
  $("transfer-redeem").focus();
}

/** How often the grid's figures are read over HTTP while no connection brings them. */
const GRID_REFRESH_MS = 10_000;

/**
 * The grid's size and speed from `/api/status` while this page has no live connection (before
 * start is pressed, or while reconnecting): a volunteer sees them before deciding to join.
 * Before start only the page's own server is asked: another one, even confirmed, hears from
 * this browser only once the person presses start (web/test/e2e/server-link.test.mjs).
 */
async function refreshGrid() {
  if (ui.serverPending || socket?.connected) return;
  if (!socket && settings.server !== pageServer()) return;
  const asked = settings.server;
  const g = await fetchGrid(asked);
  if (g && settings.server === asked && !socket?.connected) {
    ui.grid = g;
    scheduleRender();
  }
}

// For the browser tests and the curious: a read-only view of the page's state.
globalThis.brainVolunteer = {
  snapshot: () => ({
    phase: ui.phase,
    connected: Boolean(socket?.connected),
    registered: pipeline.registered,
    workerId: ui.workerId,
    variant: ui.kernel?.variant ?? null,
    threads: pipeline.readyThreads(),
    requestsSent: ui.requestsSent,
    connects: ui.connects,
    cachedPanels: panels.size,
    cacheBytes: panels.budget,
    movedPanels: panels.detachedCount(),
    pending: pipeline.pending,
    queued: pipeline.queue.length,
    computing: pipeline.running.size,
    accepted: stats.accepted,
    refused: stats.refused,
    failed: stats.failed,
    gflopsPerThread: stats.perThreadGflops(),
    effectiveGflops: stats.effectiveGflops(),
    server: settings.server,
    serverPending: ui.serverPending,
    creditId: credit.profile?.id ?? null,
    creditAllTime: credit.profile?.credit_all_time ?? null,
    creditTiles: credit.profile ? credit.profile.tiles + credit.unread.tiles : null,
  }),
};

setup();
