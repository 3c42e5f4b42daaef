#!/usr/bin/env bash
# Builds web/dist (the volunteer page and the dashboard) with esbuild from web/src and the
# worker-wasm builds in worker-wasm/pkg-{relaxed,simd,scalar} (made by `make wasm`).
# Installs the npm dependencies from package-lock.json when they are missing or stale.
# Extra arguments go to web/build.mjs (--no-sourcemap, --no-minify, --allow-missing-wasm).
set -euo pipefail
cd "$(dirname "$0")/../web"
if ! command -v node >/dev/null 2>&1; then
  echo "build-web: node is required (apt-get install -y nodejs npm)" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "build-web: installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi
node build.mjs "$@"
