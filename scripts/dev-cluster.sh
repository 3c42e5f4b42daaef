#!/usr/bin/env bash
# Three orchestrators sharing one grid, on this machine (docs/deploy.md, "Three instances
# locally"): a private PostgreSQL and Redis on ephemeral ports, then brain-server instances
# `one`, `two` and `three` on ports 3001, 3002 and 3003, each with a scratch DATA_DIR of its
# own. Everything lives in one temporary folder and is gone after Ctrl-C, which stops the
# instances as a deploy would (SIGTERM: their volunteers get `server_shutdown`) and then the
# databases.
#
#   scripts/dev-cluster.sh [--release]
#
# CLUSTER_PORTS (default "3001 3002 3003") picks the instances' ports, and their number;
# HOST (default 127.0.0.1) the address they bind; BRAIN_SERVER_BIN a brain-server to run
# instead of building one. Other variables (API_TOKEN, LEASE_MS, …)
# pass through to every instance, as do those of .env, which the server reads.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
. scripts/private-services.sh

profile=debug
case "${1:-}" in
  --release) profile=release ;;
  "") ;;
  *) echo "usage: scripts/dev-cluster.sh [--release]" >&2; exit 2 ;;
esac
read -r -a ports <<< "${CLUSTER_PORTS:-3001 3002 3003}"
names=(one two three four five six seven eight nine)
[ "${#ports[@]}" -le "${#names[@]}" ] || { echo "dev-cluster: at most ${#names[@]} instances" >&2; exit 2; }
host=${HOST:-127.0.0.1}

for port in "${ports[@]}"; do
  if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
    echo "dev-cluster: port $port is taken (make dev?); stop that or set CLUSTER_PORTS" >&2
    exit 1
  fi
done

if [ -n "${BRAIN_SERVER_BIN:-}" ]; then
  bin=$BRAIN_SERVER_BIN
elif [ "$profile" = release ]; then
  cargo build --release -p server --bin brain-server
  bin=$PWD/target/release/brain-server
else
  cargo build -p server --bin brain-server
  bin=$PWD/target/debug/brain-server
fi
web=web/dist
[ -d "$web" ] || echo "dev-cluster: no $web: the API and Socket.io work, but build the page with 'make web' to open it"

dir=$(mktemp -d "${TMPDIR:-/tmp}/brain-cluster.XXXXXX")
at_exit "rm -rf '$dir'"
start_private_postgres "$dir"
start_private_redis "$dir"

pids=()
# Whether PID runs: an exited child not yet waited for (a zombie) answers `kill -0` too.
alive() {
  [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2> /dev/null
}
# Stops every instance with SIGTERM (their graceful shutdown: volunteers are told
# `server_shutdown`, leases go back to the queue), SIGKILL for any still running after 30 s.
stop_instances() {
  local pid killer
  [ "${#pids[@]}" -gt 0 ] || return 0
  echo "dev-cluster: stopping the instances, then PostgreSQL and Redis"
  kill -TERM "${pids[@]}" 2> /dev/null || true
  (sleep 30 && kill -KILL "${pids[@]}" 2> /dev/null) &
  killer=$!
  for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null || true; done
  kill "$killer" 2> /dev/null || true
  wait "$killer" 2> /dev/null || true
  pids=()
}
at_exit stop_instances

for i in "${!ports[@]}"; do
  name=${names[i]}
  mkdir -p "$dir/$name"
  # Its own session, so that Ctrl-C reaches only this script, which stops the instances in
  # order; its output goes to its log and, prefixed with its name, to the terminal (the
  # reader ignores Ctrl-C, so that the instance's last words are still shown).
  env INSTANCE_ID="$name" PORT="${ports[i]}" HOST="$host" WEB_DIR="$web" \
    DATABASE_URL="$postgres_url" REDIS_URL="$redis_url" \
    DATA_DIR="$dir/$name/jobs" DATABASE_PATH="$dir/$name/unused.db" \
    setsid "$bin" \
    > >(trap '' INT; exec tee "$dir/$name/server.log" | sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
done

# Ready once /health answers on every instance (the first one applies the migrations).
for i in "${!ports[@]}"; do
  url="http://127.0.0.1:${ports[i]}"
  for _ in $(seq 600); do
    curl -sf "$url/health" > /dev/null 2>&1 && break
    alive "${pids[i]}" || { echo "dev-cluster: instance ${names[i]} exited while starting" >&2; exit 1; }
    sleep 0.1
  done
  curl -sf "$url/health" > /dev/null || { echo "dev-cluster: instance ${names[i]} did not answer /health" >&2; exit 1; }
done

echo
echo "dev-cluster: ${#ports[@]} instances share one grid (Ctrl-C stops everything)"
for i in "${!ports[@]}"; do
  printf '  %-6s http://localhost:%s/  dashboard: http://localhost:%s/dashboard  (pid %s)\n' \
    "${names[i]}" "${ports[i]}" "${ports[i]}" "${pids[i]}"
done
echo "  PostgreSQL: $postgres_url  (psql $postgres_url)"
echo "  Redis:      $redis_url"
echo "  logs:       $dir/<instance>/server.log"
echo

# Runs until Ctrl-C. An instance that exits (or is killed, to watch the others take over its
# leases) is reported; the others run on.
running=("${pids[@]}")
while [ "${#running[@]}" -gt 0 ]; do
  status=0
  wait -n -p gone "${running[@]}" || status=$?
  for i in "${!pids[@]}"; do
    if [ "${pids[i]}" = "${gone:-}" ]; then
      echo "dev-cluster: instance ${names[i]} (port ${ports[i]}) exited with status $status; the others run on"
    fi
  done
  still=()
  for pid in "${running[@]}"; do
    [ "$pid" = "${gone:-}" ] || still+=("$pid")
  done
  running=("${still[@]}")
done
echo "dev-cluster: no instance left"
