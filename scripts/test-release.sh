#!/usr/bin/env bash
# The release build as the Dockerfile runs it (scripts/build-release.sh), from this checkout
# (in CI a clean clone), then the staged dist/ started on an ephemeral port: /health answers,
# and the page and dashboard are served from dist/web with their wasm modules.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-release.sh
test -x dist/brain-server
test -f dist/web/index.html
dir=$(mktemp -d)
PORT=0 HOST=127.0.0.1 DATABASE_PATH="$dir/brain.db" WEB_DIR=dist/web RUST_LOG=warn \
  dist/brain-server > "$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
url=
for _ in $(seq 100); do
  url=$(grep -o 'http://[0-9.:]*' "$dir/server.log" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$dir/server.log"; echo "test-release: dist/brain-server did not start"; exit 1; }
curl -sf "$url/health" | grep -q '"ok"'
curl -sf "$url/" | grep -qi '<html'
curl -sf "$url/dashboard" | grep -qi '<html'
wasm=$(cd dist/web && find . -name '*.wasm' | head -1)
[ -n "$wasm" ] || { echo "test-release: no wasm module in dist/web"; exit 1; }
curl -sf -o /dev/null "$url/${wasm#./}"
echo "test-release: dist/brain-server serves /health, the page, the dashboard and ${wasm#./}"
