#!/usr/bin/env node
// A command-line volunteer: connects N Socket.io workers to a server and computes the tiles
// it is given with a plain triple loop. For trying the grid from a terminal (see README.md).
//
//   node tests/e2e/worker.mjs [--server http://localhost:3000] [--workers 2] [--exit-when-idle]

import { parseArgs } from "node:util";
import { startWorker } from "./helpers.mjs";

const { values } = parseArgs({
  options: {
    server: { type: "string", default: process.env.BRAIN_SERVER ?? "http://localhost:3000" },
    workers: { type: "string", default: "2" },
    "exit-when-idle": { type: "boolean", default: false },
  },
});
const count = Number(values.workers);
if (!Number.isInteger(count) || count < 1) {
  console.error("--workers must be a positive integer");
  process.exit(2);
}
const workers = [];
for (let i = 0; i < count; i++) {
  try {
    workers.push(await startWorker(null, values.server, { name: `cli-${i + 1}`, reconnection: true }));
  } catch (e) {
    console.error(`cannot connect to ${values.server}: ${e.message}`);
    process.exit(1);
  }
}
console.log(`${count} worker(s) connected to ${values.server}; Ctrl-C to stop`);
let last = -1;
let idleSince = Date.now();
setInterval(() => {
  const done = workers.reduce((s, w) => s + w.stats.accepted, 0);
  if (done !== last) {
    console.log(`tiles accepted: ${done}`);
    last = done;
    idleSince = Date.now();
  } else if (values["exit-when-idle"] && done > 0 && Date.now() - idleSince > 2000) {
    for (const w of workers) w.socket.close();
    process.exit(0);
  }
}, 500);
