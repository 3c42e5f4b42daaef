#!/usr/bin/env bash
# End-to-end tests of the orchestrator: the real server binary on ephemeral ports with
# temporary databases, driven by the official socket.io-client under Node's test runner; the
# `brain` CLI, the command-line volunteer (tools/volunteer), the load harness (with the wasm
# kernel) and the Python example in docs/python.md run against it too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The network shaper too (tests/support/shaper.mjs), in the same build: seconds, not minutes.
cargo build -p server --bin brain-server -p brain-cli --bin brain -p shaper --bin brain-shaper
[ -f worker-wasm/pkg-simd/worker_wasm_bg.wasm ] || scripts/build-wasm.sh
if ! python3 -c 'import numpy, requests' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "numpy==2.3.5" "requests==2.32.5"
fi
# The tests' own packages, and the command-line volunteer's (volunteer.test.mjs runs it).
for dir in tests/e2e tools/volunteer; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund)
  fi
done
scripts/services.sh # PostgreSQL and Redis, for the tests that start private instances of them
cd tests/e2e
BRAIN_SERVER_BIN="$PWD/../../target/debug/brain-server" BRAIN_CLI_BIN="$PWD/../../target/debug/brain" node --test --test-concurrency=2 --test-reporter=spec
# The same suite against PostgreSQL (#18): each test file starts a private instance, and each
# server gets a database of its own (tests/e2e/helpers.mjs). Not twice: the check of the
# instances themselves, the instances and cluster tests (PostgreSQL already) and the
# memory-limited big job, whose server is SQLite's.
BRAIN_TEST_DATABASE=postgres BRAIN_SERVER_BIN="$PWD/../../target/debug/brain-server" BRAIN_CLI_BIN="$PWD/../../target/debug/brain" \
  node --test --test-concurrency=2 --test-reporter=spec $(ls *.test.mjs | grep -v -e '^services\.' -e '^instances\.' -e '^cluster\.' -e '^bigjob\.')
