#!/usr/bin/env bash
# The kernel's tests compiled to WebAssembly (simd128) and run in Node by
# wasm-bindgen-test-runner (one of them asserts that the build really uses simd128), then the
# three wasm-pack packages the page loads (simd, relaxed, scalar) checked against an f64
# reference through their JavaScript API.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo test -p worker-wasm --target wasm32-unknown-unknown
scripts/build-wasm.sh
cd worker-wasm/bench
node check.mjs ../pkg-simd
node check.mjs ../pkg-scalar
node --experimental-wasm-relaxed-simd check.mjs ../pkg-relaxed
