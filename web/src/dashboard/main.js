// The dashboard: jobs with live progress, a job's tiles filling in, workers online, grid
// throughput, and a form to submit jobs. Live data arrives over Socket.io (`job_update`,
// `tile_update`, `grid_stats` after `subscribe_dashboard`); HTTP is used for the first load,
// after a reconnection, and for the worker list (every few seconds, it has no event).
// Nothing is fetched or connected before the server is chosen: a server named by the link
// (`?server=`) is used only once the person confirms it (see common/server-prompt.js).

import { io } from "socket.io-client";
import { Api, ApiError } from "./api.js";
import { JobPace, jobGflops, Series } from "./progress.js";
import { encodeNpy } from "../common/npy.js";
import { randomMatrix } from "../common/random.js";
import { pageServer } from "../common/settings.js";
import { chooseServer } from "../common/server-prompt.js";
import { formatCount, formatDuration, formatGflops, formatBytes } from "../common/format.js";
import { fetchGrid, formatGridSpeed } from "../common/grid.js";
import { CreditApi, boardRows, profileHref } from "../common/credit.js";

const $ = (id) => document.getElementById(id);
/** The server's origin; null while the person has not yet answered a link's proposal. */
let server = null;
/** The HTTP API of `server`, with that server's token only. */
let api = null;
let socket = null;

const jobs = new Map(); // id -> {job, pace, el}
let order = []; // ids, newest first
let selected = null; // {id, tileRows, tileCols, states: Uint8Array}
const history = new Series(600);
const CHART_SPAN_MS = 10 * 60 * 1000;
const STATES = ["queued", "leased", "done", "failed", "cancelled"];

// ---------------------------------------------------------------------------------------
// Live connection

function connect() {
  socket = io(server, { transports: ["websocket"], reconnectionDelayMax: 5000 });
  socket.on("connect", () => {
    socket.emit("subscribe_dashboard");
    setConnection("connected", true);
    refreshAll();
  });
  socket.on("disconnect", (reason) => {
    setConnection("disconnected: reconnecting", false);
    if (reason === "io server disconnect") setTimeout(() => socket.connect(), 2000);
  });
  socket.io.on("reconnect_attempt", (n) => setConnection(`reconnecting (attempt ${n})`, false));
  socket.on("connect_error", () => setConnection("cannot reach the server; retrying", false));
  socket.on("job_update", (job) => upsertJob(job));
  socket.on("tile_update", (t) => {
    if (!selected || t.job_id !== selected.id) return;
    setTile(t.row, t.col, t.state);
    renderSummary();
  });
  socket.on("grid_stats", (g) => showGrid(g));
}

/** The grid card and the throughput chart, from `grid_stats` or `/api/status`. */
function showGrid(g) {
  $("grid-workers").textContent = formatCount(g.workers_online);
  $("grid-speed").textContent = formatGridSpeed(g);
  $("grid-jobs").textContent = formatCount(g.jobs_running);
  history.push(Date.now(), g.gflops);
  renderChart();
  if (g.workers_online !== lastWorkersOnline) refreshWorkers();
}

/** The server this page uses (common/server-prompt.js): the link's only once confirmed. */
function chooseDashboardServer() {
  return chooseServer({
    asking: () => setConnection("not connected: choose the server above", false),
    consequence: (choice) =>
      `The dashboard would show that server's jobs and send it the matrices you submit. ` +
      `It would not send it the API token you entered for ${choice.current}: a server gets only a token entered for it.`,
    invalid: (chosen) => status(`The link named a server that is not an http(s) address; using ${chosen}.`, true),
  });
}

function setConnection(text, ok) {
  $("connection").textContent = text;
  $("connection").dataset.state = ok ? "connected" : "disconnected";
}

async function refreshAll() {
  // The grid's figures at once, not at the next broadcast (every few seconds).
  fetchGrid(server).then((g) => g && showGrid(g));
  try {
    const list = await api.jobs();
    for (const job of list.slice().reverse()) upsertJob(job);
    order = list.map((j) => j.id).concat(order.filter((id) => !list.some((j) => j.id === id)));
    renderOrder();
    if (selected) await selectJob(selected.id);
  } catch (e) {
    status(`Could not load jobs: ${e.message}`, true);
  }
  refreshWorkers();
}

// ---------------------------------------------------------------------------------------
// Jobs

function upsertJob(job) {
  let entry = jobs.get(job.id);
  if (!entry) {
    entry = { job, pace: new JobPace(), el: jobElement(job.id) };
    jobs.set(job.id, entry);
    if (!order.includes(job.id)) order.unshift(job.id);
    renderOrder();
  }
  entry.job = job;
  entry.pace.add(Date.now(), job.tasks_done);
  renderJob(entry);
  if (selected?.id === job.id) renderSummary();
}

function jobElement(id) {
  const li = document.createElement("li");
  li.className = "job";
  li.dataset.jobId = id;
  li.innerHTML = `
    <div class="job-head"><span class="job-name"></span><span class="state"></span><span class="job-meta"></span></div>
    <progress max="1" value="0"></progress>
    <div class="job-meta job-progress"></div>
    <p class="job-error" hidden></p>
    <div class="job-actions">
      <button type="button" data-action="show">Show tiles</button>
      <button type="button" data-action="download">Download C (.npy)</button>
      <button type="button" data-action="cancel" class="danger">Cancel</button>
    </div>`;
  li.querySelector('[data-action="show"]').addEventListener("click", () => selectJob(id));
  li.querySelector('[data-action="download"]').addEventListener("click", () => download(id));
  li.querySelector('[data-action="cancel"]').addEventListener("click", () => cancel(id));
  return li;
}

function renderOrder() {
  $("jobs").replaceChildren(...order.map((id) => jobs.get(id)?.el).filter(Boolean));
  $("jobs-empty").hidden = order.length > 0;
}

function renderJob({ job, pace, el }) {
  const name = job.name || job.id.slice(0, 8);
  el.querySelector(".job-name").textContent = name;
  const state = el.querySelector(".state");
  state.textContent = job.status;
  state.className = `state state-${job.status}`;
  el.dataset.status = job.status;
  const slices = job.k_split > 1 ? `, k in ${job.k_split} slices` : "";
  el.querySelector(".job-meta").textContent = `${job.m}×${job.k} · ${job.k}×${job.n} ${job.dtype}, tile ${job.tile}${slices}`;
  const bar = el.querySelector("progress");
  bar.max = Math.max(1, job.tasks_total);
  bar.value = job.tasks_done;
  bar.setAttribute("aria-label", `${name}: ${job.tasks_done} of ${job.tasks_total} tiles verified`);
  const rate = pace.rate();
  const active = job.status === "running" || job.status === "queued";
  const parts = [`${formatCount(job.tasks_done)} / ${formatCount(job.tasks_total)} tiles verified`];
  if (active && rate > 0) {
    parts.push(`${rate.toFixed(1)} tiles/s (${formatGflops(jobGflops(job, rate))})`);
    parts.push(`about ${formatDuration(pace.eta(job.tasks_total - job.tasks_done))} left`);
  } else if (job.status === "done" && job.finished_at) {
    const ms = Date.parse(job.finished_at) - Date.parse(job.created_at);
    if (ms >= 0) parts.push(`took ${formatDuration(ms)}`);
  }
  el.querySelector(".job-progress").textContent = parts.join(" · ");
  const err = el.querySelector(".job-error");
  err.hidden = !job.error;
  err.textContent = job.error ?? "";
  el.querySelector('[data-action="download"]').disabled = job.status !== "done";
  el.querySelector('[data-action="cancel"]').hidden = !active;
  el.setAttribute("aria-current", String(selected?.id === job.id));
}

async function download(id) {
  const entry = jobs.get(id);
  try {
    status("Downloading the result…");
    const blob = await api.result(id);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${(entry?.job.name || id).replace(/[^\w.-]+/g, "_")}-C.npy`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
    status(`Downloaded ${formatBytes(blob.size)}.`);
  } catch (e) {
    handleApiError(e, "download");
  }
}

async function cancel(id) {
  const name = jobs.get(id)?.job.name || id.slice(0, 8);
  if (!confirm(`Cancel job ${name}? Its remaining tiles are withdrawn.`)) return;
  try {
    await api.cancel(id);
    upsertJob(await api.job(id));
    status(`Job ${name} cancelled.`);
  } catch (e) {
    handleApiError(e, "cancel");
  }
}

// ---------------------------------------------------------------------------------------
// A job's tiles

async function selectJob(id) {
  try {
    const t = await api.tiles(id);
    const states = new Uint8Array(t.tile_rows * t.tile_cols);
    // A split job's task columns are C's tile columns once per slice of k, side by side.
    selected = { id, tileRows: t.tile_rows, tileCols: t.tile_cols, slices: t.k_split ?? 1, states };
    for (const tile of t.tiles) states[tile.row * t.tile_cols + tile.col] = Math.max(0, STATES.indexOf(tile.state));
    $("detail").hidden = false;
    drawTiles();
    renderSummary();
    for (const entry of jobs.values()) entry.el.setAttribute("aria-current", String(entry.job.id === id));
  } catch (e) {
    handleApiError(e, "load tiles");
  }
}

function cellSize() {
  const width = Math.min(640, $("detail").clientWidth - 32 || 300);
  return Math.max(2, Math.min(40, Math.floor(width / Math.max(selected.tileCols, 1))));
}

function drawTiles() {
  const canvas = $("tiles");
  const size = cellSize();
  canvas.width = selected.tileCols * size;
  canvas.height = selected.tileRows * size;
  for (let r = 0; r < selected.tileRows; r++) {
    for (let c = 0; c < selected.tileCols; c++) paint(r, c, size);
  }
}

function setTile(row, col, state) {
  const i = row * selected.tileCols + col;
  if (i < 0 || i >= selected.states.length) return;
  selected.states[i] = Math.max(0, STATES.indexOf(state));
  paint(row, col, cellSize());
}

function paint(row, col, size) {
  const ctx = $("tiles").getContext("2d");
  const css = getComputedStyle(document.documentElement);
  const state = STATES[selected.states[row * selected.tileCols + col]];
  ctx.fillStyle = css.getPropertyValue(`--${state}`).trim() || "#888";
  const gap = size >= 6 ? 1 : 0;
  ctx.fillRect(col * size, row * size, size - gap, size - gap);
}

function renderSummary() {
  if (!selected) return;
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const s of selected.states) counts[STATES[s]] += 1;
  const job = jobs.get(selected.id)?.job;
  const name = job ? job.name || job.id.slice(0, 8) : selected.id.slice(0, 8);
  const { tileRows, tileCols, slices } = selected;
  const cut = slices > 1
    ? `${tileRows}×${tileCols / slices} tiles in ${slices} slices of k, side by side (${tileRows}×${tileCols} tasks)`
    : `${tileRows}×${tileCols} tiles`;
  const text = `${name}: ${cut} · ${counts.done} done, ${counts.leased} computing, ${counts.queued} queued` +
    (counts.failed ? `, ${counts.failed} failed` : "") + (counts.cancelled ? `, ${counts.cancelled} cancelled` : "");
  $("detail-h").textContent = `Job ${name}`;
  $("detail-summary").textContent = text;
  $("tiles").setAttribute("aria-label", text);
}

// ---------------------------------------------------------------------------------------
// Workers and throughput

let lastWorkersOnline = -1;
async function refreshWorkers() {
  try {
    const list = await api.workers();
    lastWorkersOnline = list.length;
    $("workers").replaceChildren(
      ...list.map((w) => {
        const tr = document.createElement("tr");
        const name = w.name || "worker";
        const cells = [
          `${name} · ${w.worker_id.slice(0, 8)}`,
          String(w.threads),
          formatGflops(w.gflops),
          formatCount(w.tasks_done),
          formatCount(w.tasks_failed),
          w.visible === false ? "background" : "visible",
        ];
        for (const text of cells) tr.append(Object.assign(document.createElement("td"), { textContent: text }));
        return tr;
      }),
    );
    if (list.length === 0) {
      const td = Object.assign(document.createElement("td"), { textContent: "No workers online.", colSpan: 6 });
      const tr = document.createElement("tr");
      tr.append(td);
      $("workers").replaceChildren(tr);
    }
  } catch {
    // The next refresh tries again; the connection line already says when the server is away.
  }
}

function renderChart() {
  const { points, max } = history.polyline(300, 76, CHART_SPAN_MS, Date.now());
  $("chart-line").setAttribute("points", points);
  $("chart-caption").textContent = `GFLOP/s over the last 10 minutes (peak ${formatGflops(max)})`;
}

// ---------------------------------------------------------------------------------------
// Leaderboards (#15): a page of a board at a time, read again every BOARD_REFRESH_MS

const BOARD_REFRESH_MS = 30_000;
const board = { kind: "volunteers", period: "all", page: 1, perPage: 25, pages: 1 };

async function refreshBoard() {
  if (!server) return;
  const asked = { ...board };
  try {
    const answer = await new CreditApi(server).board({ board: asked.kind, period: asked.period, page: asked.page, perPage: asked.perPage });
    if (asked.kind !== board.kind || asked.period !== board.period || asked.page !== board.page) return;
    const rows = boardRows(answer, (id) => profileHref(id, server, pageServer(), document.baseURI));
    if (rows.length === 0) {
      const td = Object.assign(document.createElement("td"), { textContent: "No verified work on this board yet.", colSpan: 5 });
      rows.push(document.createElement("tr"));
      rows[0].append(td);
    }
    $("board").replaceChildren(...rows);
    $("board-third").textContent = answer.board === "teams" ? "Members" : "Team";
    board.pages = Math.max(1, Math.ceil(answer.total / answer.per_page));
    $("board-page").textContent = `Page ${formatCount(answer.page)} of ${formatCount(board.pages)} · ${formatCount(answer.total)} ${answer.board}`;
  } catch (e) {
    $("board-page").textContent = `Could not load the board: ${e.message}`;
  }
  $("board-prev").disabled = board.page <= 1;
  $("board-next").disabled = board.page >= board.pages;
}

function setBoard(change) {
  Object.assign(board, change);
  board.page = Math.min(Math.max(1, board.page), 10_000);
  refreshBoard();
}

// ---------------------------------------------------------------------------------------
// Submitting

function status(text, error = false) {
  $("submit-status").textContent = text;
  $("submit-status").className = error ? "error" : "";
}

function handleApiError(e, what) {
  if (e instanceof ApiError && e.status === 401) {
    // Only this server's own token is ever sent to it; a 401 asks for that one by name.
    status(`The server ${server} needs an API token to ${what}: enter its token below, then try again.`, true);
    const details = $("token").closest("details");
    details.open = true;
    $("token").focus();
  } else {
    status(`Could not ${what}: ${e.message}`, true);
  }
}

function intField(id, label) {
  const v = Number($(id).value);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${label} must be a positive whole number`);
  return v;
}

async function submit(event) {
  event.preventDefault();
  if (!api) {
    status("Choose the server first (above).", true);
    return;
  }
  const form = new FormData();
  try {
    const source = new FormData($("submit-form")).get("source");
    if (source === "random") {
      const [m, k, n] = [intField("rand-m", "m"), intField("rand-k", "k"), intField("rand-n", "n")];
      const dtype = $("rand-dtype").value;
      const seed = Number($("rand-seed").value) || 1;
      status("Generating matrices…");
      const a = encodeNpy(randomMatrix(m, k, dtype, seed), m, k);
      const b = encodeNpy(randomMatrix(k, n, dtype, seed + 1), k, n);
      form.append("a", new Blob([a], { type: "application/octet-stream" }), "a.npy");
      form.append("b", new Blob([b], { type: "application/octet-stream" }), "b.npy");
    } else {
      const [fa, fb] = [$("file-a").files[0], $("file-b").files[0]];
      if (!fa || !fb) throw new Error("choose both .npy files");
      form.append("a", fa, fa.name);
      form.append("b", fb, fb.name);
    }
    if ($("tile").value.trim()) form.append("tile", String(intField("tile", "Tile")));
    if ($("k-split").value.trim()) form.append("k_split", String(intField("k-split", "Slices of k")));
    if ($("job-name").value.trim()) form.append("name", $("job-name").value.trim());
  } catch (e) {
    status(e.message, true);
    return;
  }
  $("submit").disabled = true;
  status("Uploading…");
  try {
    const created = await api.submit(form);
    status(`Job ${created.id.slice(0, 8)} submitted: ${created.tasks_total} tiles.`);
    upsertJob(await api.job(created.id));
  } catch (e) {
    handleApiError(e, "submit");
  } finally {
    $("submit").disabled = false;
  }
}

function setup() {
  for (const radio of document.querySelectorAll('input[name="source"]')) {
    radio.addEventListener("change", () => {
      const random = radio.value === "random" && radio.checked;
      if (!radio.checked) return;
      $("random-fields").hidden = !random;
      $("files-fields").hidden = random;
    });
  }
  $("submit-form").addEventListener("submit", submit);
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!api) {
      status("Choose the server first (above).", true);
      return;
    }
    api.token = $("token").value.trim();
    $("token").value = "";
    status(api.token ? `API token saved for ${server}, for this tab.` : `API token for ${server} cleared.`);
  });
  // Paces and ETAs decay while no update arrives; the worker list has no event of its own.
  setInterval(() => {
    for (const entry of jobs.values()) {
      if (entry.job.status === "running") {
        entry.pace.add(Date.now(), entry.job.tasks_done);
        renderJob(entry);
      }
    }
    renderChart();
  }, 2000);
  setInterval(() => api && document.visibilityState === "visible" && refreshWorkers(), 5000);
  addEventListener("resize", () => selected && drawTiles());
  $("board-kind").addEventListener("change", (e) => setBoard({ kind: e.target.value, page: 1 }));
  $("board-period").addEventListener("change", (e) => setBoard({ period: e.target.value, page: 1 }));
  $("board-prev").addEventListener("click", () => setBoard({ page: board.page - 1 }));
  $("board-next").addEventListener("click", () => setBoard({ page: board.page + 1 }));
  setInterval(() => document.visibilityState === "visible" && refreshBoard(), BOARD_REFRESH_MS);
}

function showServer() {
  $("server-shown").textContent = server;
  $("token-server").textContent = server;
  $("export-link").href = `${server}/api/stats/export`;
  if (server !== pageServer()) $("volunteer-link").href = `./?server=${encodeURIComponent(server)}`;
}

async function main() {
  setup();
  server = await chooseDashboardServer();
  api = new Api(server);
  showServer();
  connect();
  refreshBoard();
}

globalThis.brainDashboard = { jobs: () => [...jobs.values()].map((e) => e.job), server: () => server };

main();
