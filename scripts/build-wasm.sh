#!/usr/bin/env bash
# Builds the three worker-wasm modules the page chooses from with `wasm-pack build`, each a
# `--target web` package: pkg-relaxed (simd128 + relaxed-simd), pkg-simd (simd128) and
# pkg-scalar (no SIMD). wasm-pack runs in `--mode no-install`: it uses the wasm-bindgen-cli
# that scripts/setup.sh installed at the crate's exact version instead of downloading one, and
# worker-wasm/Cargo.toml turns wasm-opt off (Debian's corrupts wasm-bindgen output; set
# WASM_OPT=1 to run the npm `binaryen` package's wasm-opt on the result instead).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
build() {
  local variant=$1 features=$2
  # RUSTFLAGS overrides .cargo/config.toml's target flags for this one build; a target dir per
  # variant keeps the three from rebuilding each other.
  RUSTFLAGS="-C target-feature=$features" CARGO_TARGET_DIR="$PWD/target/wasm-$variant" \
    wasm-pack --log-level warn build worker-wasm --release --target web --mode no-install \
    --no-pack --out-dir "pkg-$variant"
  local wasm="worker-wasm/pkg-$variant/worker_wasm_bg.wasm"
  if [ "${WASM_OPT:-0}" = 1 ]; then
    (cd web && npx --yes --package=binaryen@125.0.0 wasm-opt -O3 --enable-simd --enable-relaxed-simd \
      --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals \
      "../$wasm" -o "../$wasm")
  fi
  echo "built worker-wasm/pkg-$variant ($(stat -c %s "$wasm") bytes)"
}
build simd "+simd128"
build relaxed "+simd128,+relaxed-simd"
build scalar "-simd128"
