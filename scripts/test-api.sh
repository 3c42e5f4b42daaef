#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis: no 5xx, and every
# response must match the documented status codes, content types and schemas. Twice: against
# a server on SQLite, then against one on a private PostgreSQL (#18), with the same examples.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS_VERSION=4.32.5
if ! command -v schemathesis >/dev/null 2>&1 || ! schemathesis --version | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo build -p server --bin brain-server
. scripts/test-server.sh
. scripts/private-services.sh

# `fuzz LABEL`: the server at $url, fuzzed.
fuzz() {
  echo "test-api: fuzzing the API on $1 ($url)"
  # A finished job gives the fuzzer real ids to use alongside random ones.
  curl -sf -X POST "$url/api/jobs" -H 'content-type: application/json' -d '{"a": [[1, 2]], "b": [[3], [4]]}' > /dev/null
  # positive_data_acceptance is excluded on purpose: the schema cannot say that rows must have
  # equal lengths, that inner dimensions must agree, or what a valid .npy file is, so a
  # schema-valid body can rightly be refused with 400.
  # One worker: schemathesis's workers are threads, and Hypothesis parses lambdas' source with
  # `ast` while it describes strategies; CPython 3.11's AST constructor keeps its recursion
  # depth in state shared by all threads (python/cpython#106905), so two workers can fail the
  # run with "SystemError: AST constructor recursion depth mismatch" at random (a CI run did).
  schemathesis run "$url/api/openapi.json" \
    --checks all --exclude-checks positive_data_acceptance \
    --max-examples "${API_FUZZ_EXAMPLES:-60}" --workers 1 --seed "${API_FUZZ_SEED:-20261124}"
}

start_test_server target/debug/brain-server /nonexistent MAX_JOB_BYTES=1048576
fuzz SQLite
stop_test_server

start_private_postgres
start_test_server target/debug/brain-server /nonexistent MAX_JOB_BYTES=1048576 DATABASE_URL="$postgres_url"
fuzz PostgreSQL
echo "schemathesis: no 5xx and no response outside the documented schema, on SQLite and on PostgreSQL"
