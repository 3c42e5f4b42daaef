#!/usr/bin/env bash
# Builds the three worker-wasm modules the page chooses from, each a wasm-bindgen
# `--target web` package: pkg-relaxed (simd128 + relaxed-simd), pkg-simd (simd128) and
# pkg-scalar (no SIMD). cargo + wasm-bindgen directly: wasm-pack would try to download its own
# wasm-bindgen and wasm-opt, which this network does not allow. No wasm-opt (Debian's corrupts
# wasm-bindgen output).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
build() {
  local variant=$1 features=$2
  # RUSTFLAGS overrides .cargo/config.toml for this one build; a target dir per variant keeps
  # the three from rebuilding each other.
  RUSTFLAGS="-C target-feature=$features" cargo build --release --target wasm32-unknown-unknown \
    -p worker-wasm --target-dir "target/wasm-$variant"
  rm -rf "worker-wasm/pkg-$variant"
  wasm-bindgen --target web --out-dir "worker-wasm/pkg-$variant" \
    "target/wasm-$variant/wasm32-unknown-unknown/release/worker_wasm.wasm"
  echo "built worker-wasm/pkg-$variant ($(stat -c %s "worker-wasm/pkg-$variant/worker_wasm_bg.wasm") bytes)"
}
build simd "+simd128"
build relaxed "+simd128,+relaxed-simd"
build scalar "-simd128"
