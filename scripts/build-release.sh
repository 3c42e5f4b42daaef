#!/usr/bin/env bash
# The release build, from a clean clone: the wasm kernels, the web page, and the server, staged
# in dist/ (dist/brain-server, dist/web/). The Dockerfile runs this same script.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
make web
cargo build --release -p server --bin brain-server
rm -rf dist
mkdir -p dist
cp target/release/brain-server dist/
cp -r web/dist dist/web
echo "release staged in dist/: run it with WEB_DIR=dist/web dist/brain-server"
