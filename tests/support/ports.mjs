// Free TCP ports for servers that cannot be told to bind port 0 and report what they got
// (PostgreSQL, Redis). No dependencies, so any test package can import it.
import { createServer } from "node:net";

/**
 * A port on 127.0.0.1 that was free a moment ago: the OS picks it for a probe, which then
 * lets it go. Another process may take it before the server binds it, so callers retry with a
 * new one when the server reports the address in use.
 */
export function freePort() {
  return new Promise((res, rej) => {
    const probe = createServer();
    probe.once("error", rej);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => res(port));
    });
  });
}

/**
 * Waits until `isReady()` (sync or async) says yes for a spawned server `{ proc, exited }`:
 * "ready", "exited" (it died first, or could not be spawned), or "timeout" after `ms`.
 */
export async function untilReady(server, isReady, ms) {
  if (server.proc.pid === undefined) return "exited";
  let exited = false;
  server.exited.then(() => (exited = true));
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (exited) return "exited";
    if (await isReady()) return "ready";
    await new Promise((res) => setTimeout(res, 25));
  }
  return "timeout";
}
