#!/usr/bin/env bash
# Kernel figures: each wasm build in Node (single thread) beside a naive JavaScript loop, then
# the native build. Prints GFLOP/s; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ -f worker-wasm/pkg-simd/worker_wasm_bg.wasm ] || scripts/build-wasm.sh
cd worker-wasm/bench
node bench.mjs ../pkg-scalar
node bench.mjs ../pkg-simd --naive
node --experimental-wasm-relaxed-simd bench.mjs ../pkg-relaxed
cd ../..
cargo bench -p worker-wasm --bench kernel
