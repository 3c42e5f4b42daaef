// Credit as the pages show it (#15, docs/credit.md): a volunteer's own figures, public
// profiles and the boards, from the server's credit API. Names are other people's text: they
// are only ever set as text (textContent, SVG <title> text), never parsed as HTML.

import { formatCount } from "./format.js";
import { failure } from "./http.js";

const SVG = "http://www.w3.org/2000/svg";

/** Credit in the server's unit, GFLOP verified: enough digits to see it move, no more. */
export function formatCredit(gflop) {
  if (!Number.isFinite(gflop) || gflop <= 0) return "0 GFLOP";
  if (gflop >= 1000) return `${formatCount(gflop)} GFLOP`;
  if (gflop >= 10) return `${gflop.toFixed(1)} GFLOP`;
  if (gflop >= 1) return `${gflop.toFixed(2)} GFLOP`;
  return `${gflop.toPrecision(3)} GFLOP`;
}

/** Compute time as a volunteer reads it: seconds, minutes or hours. */
export function formatComputeTime(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return "0 s";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function formatRank(rank) {
  return Number.isInteger(rank) && rank > 0 ? `#${formatCount(rank)}` : "not ranked yet";
}

async function call(url, { method = "GET", token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  // A request carrying the volunteer's token follows no redirect: it goes to its server only.
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    redirect: token ? "error" : "follow",
  });
  if (!res.ok) throw await failure(res); // its `status` and the server's reason
  return res.json();
}

/** The credit routes of one server. */
export class CreditApi {
  constructor(server) {
    this.server = server;
  }

  /** The volunteer behind `token`: its profile, with its id. */
  me(token) {
    return call(`${this.server}/api/me`, { token });
  }

  /** Sets (or, with null, clears) the volunteer's display name and team. */
  setMe(token, { name, team }) {
    return call(`${this.server}/api/me`, { method: "PUT", token, body: { name, team } });
  }

  profile(id) {
    return call(`${this.server}/api/volunteers/${encodeURIComponent(id)}`);
  }

  board({ board = "volunteers", period = "all", page = 1, perPage = 25 } = {}) {
    const q = new URLSearchParams({ board, period, page: String(page), per_page: String(perPage) });
    return call(`${this.server}/api/leaderboard?${q}`);
  }

  /** A one-time code that moves `token`'s identity to another browser. */
  issueTransfer(token) {
    return call(`${this.server}/api/me/transfer`, { method: "POST", token, body: {} });
  }

  /** Redeems a code from another browser: `{token, worker_id}`. */
  redeemTransfer(code) {
    return call(`${this.server}/api/transfer`, { method: "POST", body: { code } });
  }
}

/**
 * A transfer code as a person may type or a link may carry it: Crockford base32 with `-` or
 * spaces, any case. Returns the text to send (the server normalises it further), or null for
 * anything that cannot be one, so a hostile link's fragment never reaches the server as is.
 */
export function cleanTransferCode(text) {
  const compact = String(text ?? "").replace(/[\s-]/g, "").toUpperCase();
  if (compact.length !== 10 || !/^[0-9A-HJKMNP-TV-Z]+$/.test(compact.replace(/[OIL]/g, "0"))) return null;
  return `${compact.slice(0, 5)}-${compact.slice(5)}`;
}

/** The code a transfer link carries in its fragment (`#transfer=XXXXX-XXXXX`), or null. */
export function transferCodeFromHash(hash) {
  const m = /^#transfer=([^&]{1,40})$/.exec(String(hash ?? ""));
  if (!m) return null;
  let text;
  try {
    text = decodeURIComponent(m[1]);
  } catch {
    return null;
  }
  return cleanTransferCode(text);
}

/** The link that gives `code` to another browser: this page with the code in its fragment. */
export function transferLink(code, pageUrl) {
  const url = new URL(pageUrl);
  url.hash = `transfer=${code}`;
  return url.href;
}

/** A volunteer's public profile page on `server`, as a link relative to `base`. */
export function profileHref(id, server, pageServer, base) {
  const url = new URL("profile", base);
  url.searchParams.set("id", id);
  if (server !== pageServer) url.searchParams.set("server", server);
  return url.pathname + url.search;
}

/**
 * Draws a profile's daily history into `svg` (viewBox 0 0 300 80) as bars, one per day, each
 * with a <title> (date and credit) for a pointer or a screen reader.
 */
export function drawHistory(svg, history) {
  const days = Array.isArray(history) ? history : [];
  const max = Math.max(0, ...days.map((d) => (Number.isFinite(d.credit) ? d.credit : 0)));
  const width = 300 / Math.max(1, days.length);
  const bars = days.map((d, i) => {
    const credit = Number.isFinite(d.credit) ? d.credit : 0;
    const h = max > 0 ? (credit / max) * 76 : 0;
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", (i * width + width * 0.1).toFixed(2));
    rect.setAttribute("width", (width * 0.8).toFixed(2));
    rect.setAttribute("y", (80 - Math.max(h, credit > 0 ? 1 : 0)).toFixed(2));
    rect.setAttribute("height", Math.max(h, credit > 0 ? 1 : 0).toFixed(2));
    rect.setAttribute("fill", "currentColor");
    rect.dataset.date = String(d.date);
    rect.dataset.credit = String(credit);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${d.date}: ${formatCredit(credit)}, ${formatCount(d.tiles)} tiles`;
    rect.append(title);
    return rect;
  });
  svg.replaceChildren(...bars);
  return max;
}

/** Fills `dl`'s `[data-field]` elements from a profile. */
export function showProfile(root, p) {
  const fields = {
    name: p.name,
    team: p.team ?? "no team",
    today: formatCredit(p.credit_today),
    week: formatCredit(p.credit_week),
    all: formatCredit(p.credit_all_time),
    tiles: formatCount(p.tiles),
    time: formatComputeTime(p.compute_s),
    rank: formatRank(p.rank),
  };
  for (const el of root.querySelectorAll("[data-field]")) {
    const value = fields[el.dataset.field];
    if (value !== undefined) el.textContent = value;
  }
}

/**
 * Rows of a board as table rows: rank, name (a volunteer's links to its profile), team or
 * members, credit and tiles. Every name is text.
 */
export function boardRows(answer, profileLink) {
  return (answer?.entries ?? []).map((e) => {
    const tr = document.createElement("tr");
    const cell = (content) => {
      const td = document.createElement("td");
      if (typeof content === "string") td.textContent = content;
      else td.append(content);
      tr.append(td);
      return td;
    };
    cell(`#${formatCount(e.rank)}`);
    let name = e.name;
    if (answer.board === "volunteers" && profileLink) {
      name = Object.assign(document.createElement("a"), { href: profileLink(e.id), textContent: e.name });
    }
    const td = cell(name);
    td.className = "name";
    if (e.anonymous) td.classList.add("anonymous");
    cell(answer.board === "teams" ? `${formatCount(e.members)} member${e.members === 1 ? "" : "s"}` : (e.team ?? ""));
    cell(formatCredit(e.credit));
    cell(formatCount(e.tiles));
    return tr;
  });
}

/**
 * What a page adds on top of the credit it last read: the tiles acknowledged since, and never
 * more than the server counted. An acknowledgement can reach the page after a read that
 * already counted its tile (it comes on the socket, the read over HTTP, and a link busy with
 * panels holds the socket back: the shaped-link test once showed 17 of 16 tiles so), so only
 * results sent after a read's answer came are added: those it cannot have counted. An
 * acknowledgement of an earlier one asks for one more read (`wantsRead`), once per read.
 */
export class UnreadCredit {
  constructor(now = () => performance.now()) {
    this.now = now;
    this.forget();
  }

  forget() {
    /** GFLOP and tiles to add to the last read's figures. */
    this.gflop = 0;
    this.tiles = 0;
    /** When the last read's answer came. */
    this.answeredAt = -Infinity;
    /** Whether a read followed the last one, for what that one may have missed. */
    this.settled = true;
    /** When each result awaiting its acknowledgement was sent, by task id. */
    this.sentAt = new Map();
  }

  /** A result went out; its acknowledgement is expected on this connection. */
  sent(taskId) {
    this.sentAt.set(taskId, this.now());
  }

  /** A new connection: results sent on the last one get no acknowledgement. */
  connected() {
    this.sentAt.clear();
  }

  /** A result was refused: nothing to count. */
  refused(taskId) {
    this.sentAt.delete(taskId);
  }

  /**
   * A result was accepted. Returns whether it was added on top; when not, `wantsRead` says
   * whether one more read should come soon.
   */
  accepted(taskId, flops) {
    const sentAt = this.sentAt.get(taskId) ?? -Infinity;
    this.sentAt.delete(taskId);
    if (sentAt > this.answeredAt) {
      this.gflop += (Number(flops) || 0) / 1e9;
      this.tiles += 1;
      return true;
    }
    return false;
  }

  /** Whether a read should follow soon, for acknowledgements the last one may have missed. */
  get wantsRead() {
    return !this.settled;
  }

  /** A read answered: every result acknowledged so far was sent before, and it counts them
   * or the read that `settling` marks will. */
  answered(settling = false) {
    this.gflop = 0;
    this.tiles = 0;
    this.answeredAt = this.now();
    this.settled = settling;
  }

  /** The read that follows is on its way: no other is asked for. */
  settling() {
    this.settled = true;
  }
}
