#!/usr/bin/env bash
# The kernel's tests compiled to WebAssembly (simd128) and run in Node by
# wasm-bindgen-test-runner; one of them asserts that the build really uses simd128.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo test -p worker-wasm --target wasm32-unknown-unknown
