// The question a page asks before it uses a server that a link proposed (`?server=`).
//
// Anyone can write a link. Without this question, a link could point the dashboard at a
// server that collects what is submitted, or make a volunteer compute for a stranger. The
// prompt names the proposed server's origin (its ASCII form: a look-alike Unicode host shows
// as xn--…) and the one the page would otherwise use; every name is set as text, never HTML.

import { serverChoice, confirmServer, withoutServerParam } from "./settings.js";

/**
 * The server a page uses: the one chosen before (or the page's own), unless the link proposes
 * another and the person confirms it. Resolves once they have answered; `asking()` runs while
 * the question is open, `invalid(chosen)` when the link named something that is no server.
 * `consequence(choice)` says what the page would do with the proposed server.
 */
export async function chooseServer({ consequence, asking, invalid }) {
  const choice = serverChoice();
  let chosen = choice.current;
  if (choice.proposed) {
    asking?.();
    const yes = await askToUseServer({ proposed: choice.proposed, current: choice.current, consequence: consequence(choice) });
    if (yes) chosen = confirmServer(choice.proposed);
  }
  const { history, location } = globalThis;
  if (choice.proposed || choice.invalid) history.replaceState(history.state, "", withoutServerParam(location.href));
  if (choice.invalid) invalid?.(chosen);
  return chosen;
}

/**
 * Shows the prompt at the top of `<main>` and resolves to true when the person chooses the
 * proposed server, false when they keep the current one (Cancel, or Escape). Focus starts on
 * Cancel: pressing Enter without reading keeps the page where it was.
 */
export function askToUseServer({ proposed, current, consequence }) {
  const doc = globalThis.document;
  const box = doc.createElement("section");
  box.id = "server-prompt";
  box.className = "card banner span2";
  box.setAttribute("role", "alertdialog");
  box.setAttribute("aria-labelledby", "server-prompt-h");
  box.setAttribute("aria-describedby", "server-prompt-text");

  const h = doc.createElement("h2");
  h.id = "server-prompt-h";
  h.textContent = "Use another server?";
  const text = doc.createElement("p");
  text.id = "server-prompt-text";
  const name = (s) => Object.assign(doc.createElement("strong"), { className: "origin", textContent: s });
  const proposedName = name(proposed);
  proposedName.id = "server-prompt-origin";
  text.append("The link you followed asks this page to use the server ", proposedName, " instead of ", name(current), ". ");
  text.append(consequence, " Use it only if you know and trust it.");
  const confirm = Object.assign(doc.createElement("button"), { type: "button", id: "server-confirm" });
  confirm.textContent = `Use ${proposed}`;
  const cancel = Object.assign(doc.createElement("button"), { type: "button", id: "server-cancel" });
  cancel.textContent = `Stay on ${current}`;
  box.append(h, text, confirm, " ", cancel);

  const main = doc.querySelector("main") ?? doc.body;
  main.prepend(box);
  cancel.focus();

  return new Promise((resolve) => {
    const done = (answer) => {
      box.remove();
      resolve(answer);
    };
    confirm.addEventListener("click", () => done(true), { once: true });
    cancel.addEventListener("click", () => done(false), { once: true });
    box.addEventListener("keydown", (e) => {
      if (e.key === "Escape") done(false);
    });
  });
}
