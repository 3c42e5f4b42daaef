#!/usr/bin/env bash
# The release build as the Dockerfile runs it (scripts/build-release.sh), from this checkout
# (in CI a clean clone), then the staged dist/ started on an ephemeral port: /health answers,
# and the page and dashboard are served from dist/web with their wasm modules.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-release.sh
test -x dist/brain-server
test -f dist/web/index.html
. scripts/test-server.sh
start_test_server dist/brain-server dist/web
# Each body is read whole before it is looked at: `curl | grep -q` under pipefail failed when
# grep stopped reading at its match and curl's next write found the pipe closed (curl exit 23,
# once in CI).
served() { local body; body=$(curl -sf "$url$1") && grep -qi -- "$2" <<<"$body"; }
served /health '"ok"'
served / '<html'
served /dashboard '<html'
wasm=$(cd dist/web && find . -name '*.wasm' | head -1)
[ -n "$wasm" ] || { echo "test-release: no wasm module in dist/web"; exit 1; }
curl -sf -o /dev/null "$url/${wasm#./}"
echo "test-release: dist/brain-server serves /health, the page, the dashboard and ${wasm#./}"
