#!/usr/bin/env bash
# End-to-end tests of the orchestrator: the real server binary on ephemeral ports with
# temporary databases, driven by the official socket.io-client under Node's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p server --bin brain-server -p brain-cli --bin brain
cd tests/e2e
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund
fi
BRAIN_SERVER_BIN="$PWD/../../target/debug/brain-server" BRAIN_CLI_BIN="$PWD/../../target/debug/brain" node --test --test-concurrency=2 --test-reporter=spec
