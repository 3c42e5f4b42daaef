#!/usr/bin/env bash
# Installs what the WebAssembly build needs, once: the wasm32 target, wasm-pack, and
# wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock (a mismatch
# fails at build time with "different bindgen format"; wasm-pack would download its own, which
# this network does not allow). Quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! rustup target list --installed | grep -q '^wasm32-unknown-unknown$'; then
  rustup target add wasm32-unknown-unknown
fi
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$version" ]; then
  echo "setup: wasm-bindgen is not in Cargo.lock" >&2
  exit 1
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q " $version\$"; then
  echo "setup: installing wasm-bindgen-cli $version (a few minutes, once)"
  # Not --locked: a locked dependency of the CLI is missing from the registry mirror.
  cargo install wasm-bindgen-cli --version "$version"
fi
WASM_PACK_VERSION=0.13.1
if ! wasm-pack --version 2>/dev/null | grep -q " $WASM_PACK_VERSION\$"; then
  echo "setup: installing wasm-pack $WASM_PACK_VERSION (a few minutes, once)"
  cargo install wasm-pack --version "$WASM_PACK_VERSION"
fi
