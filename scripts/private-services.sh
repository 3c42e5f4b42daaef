# shellcheck shell=bash disable=SC2034  # sets variables for the script that sources it
# Sourced by the shell scripts that need PostgreSQL or Redis (test-api.sh, dev-cluster.sh):
# private, throwaway instances on 127.0.0.1 at ephemeral ports, in a folder of their own, and
# stopped when the calling script exits (at-exit.sh). The same approach as
# tests/support/postgres.mjs and tests/support/redis.mjs, for bash.
#
#   start_private_postgres [PARENT_DIR]  sets $postgres_url (postgres://brain@127.0.0.1:PORT/brain)
#   start_private_redis [PARENT_DIR]     sets $redis_url (redis://127.0.0.1:PORT)
#
# Each makes its folder under PARENT_DIR (default: a new temporary folder) and removes it
# when it stops. scripts/services.sh installs both servers from Debian when they are missing.
[ -n "${private_services_loaded:-}" ] && return 0
private_services_loaded=1
private_services_scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$private_services_scripts/at-exit.sh"

# Starts retried when another process took the probed port before the server bound it.
PRIVATE_SERVICE_PORT_ATTEMPTS=5

# A port free at the moment of asking. Another process may take it before our server binds
# it: the callers retry on "address already in use".
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Where PostgreSQL's programs are, as scripts/services.sh finds them (installing them first
# when they are missing): Debian keeps them in /usr/lib/postgresql/<major>/bin, off PATH.
postgres_bin_dir() {
  local initdb
  initdb=$("$private_services_scripts/services.sh" | sed -n 's|^services: \(/.*\)/initdb$|\1|p')
  [ -n "$initdb" ] || { echo "private-services: no initdb found by scripts/services.sh" >&2; return 1; }
  echo "$initdb"
}

# PostgreSQL refuses to run as root: as root, its programs run as the postgres user, from the
# cluster's folder (root's working directory may be closed to that user).
as_postgres() {
  local dir=$1
  shift
  if [ "$(id -u)" -eq 0 ]; then
    (cd "$dir" && runuser -u postgres -- "$@")
  else
    (cd "$dir" && "$@")
  fi
}

start_private_postgres() {
  local parent=${1:-}
  local bin dir attempt port
  bin=$(postgres_bin_dir)
  if [ -z "$parent" ]; then
    parent=$(mktemp -d)
    at_exit "rm -rf '$parent'"
  fi
  dir=$(mktemp -d "$parent/postgres.XXXXXX")
  if [ "$(id -u)" -eq 0 ]; then
    # The postgres user must reach its folder: traversal only, not listing.
    chmod a+x "$parent"
    chown postgres: "$dir"
  fi
  at_exit "rm -rf '$dir'"
  # fsync and friends off: the cluster is thrown away, and initdb and tests are faster so.
  as_postgres "$dir" "$bin/initdb" -D "$dir/data" -U brain --auth=trust -E UTF8 --no-locale --no-sync \
    > "$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  for ((attempt = 1; ; attempt++)); do
    port=$(free_port)
    if as_postgres "$dir" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start > /dev/null; then
      break
    fi
    as_postgres "$dir" "$bin/pg_ctl" -D "$dir/data" -m immediate stop > /dev/null 2>&1 || true
    if [ "$attempt" -lt "$PRIVATE_SERVICE_PORT_ATTEMPTS" ] &&
      grep -qiE 'could not bind|address already in use' "$dir/postgres.log"; then
      continue
    fi
    cat "$dir/postgres.log" >&2
    echo "private-services: PostgreSQL did not start on 127.0.0.1:$port" >&2
    return 1
  done
  # Registered after the folder's removal, so it runs before it.
  at_exit "as_postgres '$dir' '$bin/pg_ctl' -D '$dir/data' -m fast stop > /dev/null"
  as_postgres "$dir" "$bin/createdb" -h 127.0.0.1 -p "$port" -U brain brain
  postgres_url="postgres://brain@127.0.0.1:$port/brain"
}

# Whether a Redis server answers PING on 127.0.0.1:PORT, spoken in raw RESP (no redis-cli
# needed).
redis_answers() {
  local reply
  {
    exec 3<> "/dev/tcp/127.0.0.1/$1" &&
      printf 'PING\r\n' >&3 &&
      IFS= read -r -t 2 reply <&3 &&
      exec 3>&-
  } 2> /dev/null || return 1
  [ "${reply%$'\r'}" = "+PONG" ]
}

start_private_redis() {
  local parent=${1:-}
  local dir attempt port pid
  command -v redis-server > /dev/null || "$private_services_scripts/services.sh" > /dev/null
  if [ -z "$parent" ]; then
    parent=$(mktemp -d)
    at_exit "rm -rf '$parent'"
  fi
  dir=$(mktemp -d "$parent/redis.XXXXXX")
  at_exit "rm -rf '$dir'"
  for ((attempt = 1; ; attempt++)); do
    port=$(free_port)
    # Nothing is saved (no snapshots, no append-only file); --dir is where it would write. Its
    # own session, as pg_ctl gives PostgreSQL: Ctrl-C in a terminal must not stop it before the
    # servers that use it.
    setsid redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
      > "$dir/redis.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do
      redis_answers "$port" && break
      kill -0 "$pid" 2> /dev/null || break
      sleep 0.1
    done
    if redis_answers "$port"; then
      break
    fi
    kill "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    if [ "$attempt" -lt "$PRIVATE_SERVICE_PORT_ATTEMPTS" ] && grep -qi 'address already in use' "$dir/redis.log"; then
      continue
    fi
    cat "$dir/redis.log" >&2
    echo "private-services: redis-server did not answer on 127.0.0.1:$port" >&2
    return 1
  done
  at_exit "kill $pid 2> /dev/null; wait $pid 2> /dev/null"
  redis_url="redis://127.0.0.1:$port"
}
