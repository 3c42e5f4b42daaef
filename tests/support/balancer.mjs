// A TCP load balancer for tests, standing in for Render's in front of several instances: each
// new connection goes to the next backend in turn, and to the one after when a backend refuses
// (it is stopping, or was killed). Connections already made stay with their backend, as
// websockets do behind a real balancer; pages use websockets only, so no session needs to be
// sticky. No dependencies, so any test package can import it.
import { connect, createServer } from "node:net";

/**
 * Starts a balancer on 127.0.0.1 at an ephemeral port over `ports` (the backends' ports; the
 * array may be changed later) and resolves to `{ url, port, ports, connections, stop() }`.
 * `connections[i]` counts the connections handed to `ports[i]`. `stop()` closes the listener
 * and every connection it carries; it is registered with `t.after` when `t` is given.
 */
export async function startBalancer({ t, ports }) {
  const open = new Set();
  const connections = ports.map(() => 0);
  let next = 0;
  const server = createServer((client) => {
    open.add(client);
    client.on("close", () => open.delete(client));
    client.on("error", () => client.destroy());
    client.pause();
    const tryBackend = (left) => {
      if (left === 0 || client.destroyed) return client.destroy();
      const i = next++ % ports.length;
      const backend = connect(ports[i], "127.0.0.1");
      backend.once("error", () => {
        backend.destroy();
        tryBackend(left - 1);
      });
      backend.once("connect", () => {
        connections[i] = (connections[i] ?? 0) + 1;
        open.add(backend);
        backend.on("close", () => {
          open.delete(backend);
          client.destroy();
        });
        backend.removeAllListeners("error");
        backend.on("error", () => backend.destroy());
        client.on("close", () => backend.destroy());
        client.pipe(backend);
        backend.pipe(client);
        client.resume();
      });
    };
    tryBackend(ports.length);
  });
  await new Promise((res) => server.listen(0, "127.0.0.1", res));
  const { port } = server.address();
  let stopping;
  const stop = () =>
    (stopping ??= new Promise((res) => {
      for (const socket of open) socket.destroy();
      server.close(() => res());
    }));
  t?.after(stop);
  return { url: `http://127.0.0.1:${port}`, port, ports, connections, stop };
}
