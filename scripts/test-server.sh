# Sourced by the shell tests: `start_test_server BIN WEB_DIR [VAR=value ...]` starts BIN on
# 127.0.0.1 with an ephemeral port and a temporary database, sets $url once it listens, and
# stops it (and removes its folder) when the calling script exits.
start_test_server() {
  local bin=$1 web=$2
  shift 2
  test_server_dir=$(mktemp -d)
  env PORT=0 HOST=127.0.0.1 DATABASE_PATH="$test_server_dir/brain.db" WEB_DIR="$web" RUST_LOG=warn "$@" \
    "$bin" > "$test_server_dir/server.log" 2>&1 &
  test_server_pid=$!
  trap 'kill $test_server_pid 2>/dev/null || true; wait $test_server_pid 2>/dev/null || true; rm -rf "$test_server_dir"' EXIT
  url=
  for _ in $(seq 100); do
    url=$(grep -o 'http://[0-9.:]*' "$test_server_dir/server.log" | head -1 || true)
    [ -n "$url" ] && return 0
    sleep 0.1
  done
  cat "$test_server_dir/server.log"
  echo "$bin did not start" >&2
  exit 1
}
