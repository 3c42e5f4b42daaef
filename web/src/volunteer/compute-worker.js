// One compute thread: a dedicated Web Worker with its own instance of the worker-wasm
// module. It never touches the network; the page's single Socket.io connection (on the UI
// thread, which never computes and so always answers pings) hands it tasks with a copy of
// the panels it does not keep yet (it keeps those the page's cache holds, until the page says
// to forget them), and it transfers the product back.
//
// This file only loads the kernel build the page chose and hands the worker to its loop in
// Rust (worker-wasm/src/thread.rs: tasks, duty cycle, cancellation, timing, results).
//
// Messages in:  {type:"init", variant, module, duty, thread, memory_bytes} · {type:"task", task} ·
//               {type:"duty", duty} · {type:"cancel", task_id} · {type:"forget", keys} ·
//               {type:"forget_all"}
// Messages out: {type:"ready", info, gflops} ·
//               {type:"done", task_id, c, compute_ms, flops, gflops, started_at, ended_at} ·
//               {type:"error", task_id, error} · {type:"fatal", error}

import { variants } from "brain:wasm-variants";

// Messages that arrive while the module loads; the Rust loop handles them first, in order.
const early = [];

self.onmessage = (event) => {
  const msg = event.data;
  if (msg?.type !== "init") {
    early.push(msg);
    return;
  }
  start(msg).catch((e) => self.postMessage({ type: "fatal", error: String(e?.message ?? e) }));
};

async function start(init) {
  const build = variants[init.variant];
  if (!build) throw new Error(`this page was built without the ${init.variant} kernel`);
  await build.init({ module_or_path: init.module });
  // From here on the worker's onmessage is Rust's.
  build.api.runComputeThread(init, early);
}
