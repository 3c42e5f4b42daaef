# shellcheck shell=bash
# Sourced by the shell tests: `start_test_server BIN WEB_DIR [VAR=value ...]` starts BIN on
# 127.0.0.1 with an ephemeral port and a temporary database, sets $url once it listens, and
# stops it (and removes its folder) when the calling script exits, or earlier with
# `stop_test_server`, so that a script can start another one after it.
. "$(dirname "${BASH_SOURCE[0]}")/at-exit.sh"

start_test_server() {
  local bin=$1 web=$2
  shift 2
  test_server_dir=$(mktemp -d)
  env PORT=0 HOST=127.0.0.1 DATABASE_PATH="$test_server_dir/brain.db" WEB_DIR="$web" RUST_LOG=warn "$@" \
    "$bin" > "$test_server_dir/server.log" 2>&1 &
  test_server_pid=$!
  at_exit "stop_server $test_server_pid '$test_server_dir'"
  url=
  # Generous: on PostgreSQL the server applies its migrations first, on a loaded machine.
  for _ in $(seq 600); do
    url=$(grep -o 'http://[0-9.:]*' "$test_server_dir/server.log" | head -1 || true)
    [ -n "$url" ] && return 0
    kill -0 "$test_server_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$test_server_dir/server.log"
  echo "$bin did not start" >&2
  exit 1
}

# Stops the server started last by start_test_server (SIGTERM, its graceful shutdown) and
# removes its folder.
stop_test_server() {
  stop_server "$test_server_pid" "$test_server_dir"
}

# `stop_server PID DIR`: safe to call twice (at exit, after stop_test_server).
stop_server() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  rm -rf "$2"
}
