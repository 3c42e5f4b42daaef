#!/usr/bin/env bash
# Tests of web/: unit tests of the pages' own logic (Node's test runner), then browser tests
# in headless Chromium (Debian's, driven by playwright-core) against the real server binary
# on an ephemeral port. Screenshots land in test-output/web/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  (cd web && npm ci --no-audit --no-fund)
fi

echo "== web unit tests"
(cd web && node --test --test-reporter=spec test/unit/)

echo "== browser tests"
CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_BIN" ]; then
  echo "installing Debian's chromium (once)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  $SUDO apt-get install -y chromium chromium-driver
fi
cargo build -p server --bin brain-server -p shaper --bin brain-shaper # the shaper: the page on a phone's link (test/e2e/shaped.test.mjs)
scripts/services.sh # PostgreSQL and Redis, for the rolling-deploy test (test/e2e/cluster.test.mjs)
[ -f web/dist/index.html ] && [ -f web/dist/wasm-manifest.json ] || scripts/build-web.sh
mkdir -p test-output/web
cd web
CHROMIUM_BIN="$CHROMIUM_BIN" BRAIN_SERVER_BIN="$PWD/../target/debug/brain-server" \
  timeout 600 node --test --test-concurrency=1 --test-reporter=spec test/e2e/
