// A volunteer's public profile (`profile?id=<worker id>`), the page a volunteer shares: name,
// team, credit today, this week and ever, rank, tiles, compute time and the last 30 days,
// from `GET /api/volunteers/{id}`. The name is someone else's text: it is set as text only.

import { pageServer } from "../common/settings.js";
import { chooseServer } from "../common/server-prompt.js";
import { CreditApi, drawHistory, showProfile } from "../common/credit.js";

const $ = (id) => document.getElementById(id);

/** How often the figures are read again while the page is open and visible. */
const REFRESH_MS = 60_000;

function say(text, error = false) {
  $("profile-status").textContent = text;
  $("profile-status").className = error ? "error" : "";
}

async function show(api, id) {
  try {
    const p = await api.profile(id);
    showProfile($("profile"), p);
    drawHistory($("profile-chart"), p.history);
    document.title = `${p.name} · Distributed Brain`;
    $("profile-figures").hidden = false;
    $("profile-chart-figure").hidden = false;
    say(p.anonymous ? "This volunteer has not chosen a display name." : "");
  } catch (e) {
    say(e.status === 404 ? "No such volunteer on this server." : `Could not read the profile: ${e.message}`, true);
    $("profile-figures").hidden = e.status === 404 || $("profile-figures").hidden;
  }
}

async function main() {
  const id = new URLSearchParams(location.search).get("id") ?? "";
  const server = await chooseServer({
    consequence: () => "The page would show a volunteer's profile from that server.",
    invalid: (chosen) => say(`The link named a server that is not an http(s) address; using ${chosen}.`, true),
  });
  if (server !== pageServer()) {
    for (const link of ["volunteer-link", "dashboard-link", "boards-link"]) {
      const url = new URL($(link).getAttribute("href"), document.baseURI);
      url.searchParams.set("server", server);
      $(link).href = url.pathname + url.search + url.hash;
    }
  }
  // An id is the server's (a UUID); anything else is answered here, not sent.
  if (!/^[0-9a-fA-F-]{1,64}$/.test(id)) {
    say("This link names no volunteer (it needs ?id=…).", true);
    return;
  }
  const api = new CreditApi(server);
  await show(api, id);
  setInterval(() => document.visibilityState === "visible" && show(api, id), REFRESH_MS);
}

main();
