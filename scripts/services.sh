#!/usr/bin/env bash
# Installs PostgreSQL and Redis from Debian when they are missing, for the tests that start
# private instances of them (tests/support/postgres.mjs, tests/support/redis.mjs), and prints
# the paths of the programs those use. Quick and quiet when everything is already there:
# `apt-get update` runs only when something must be installed.
#
# Debian keeps PostgreSQL's programs in /usr/lib/postgresql/<major>/bin, off PATH (only its
# wrappers, such as psql, are on it); the newest major installed is the one used, as in
# tests/support/postgres.mjs.
set -euo pipefail

postgres_bin_dir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
  elif command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
  fi
}

missing=()
[ -n "$(postgres_bin_dir)" ] || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "services: installing ${missing[*]} from Debian (once)"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bin=$(postgres_bin_dir)
for program in initdb pg_ctl postgres; do
  if [ ! -x "$bin/$program" ]; then
    echo "services: $program is missing from ${bin:-the PostgreSQL bin directory}" >&2
    exit 1
  fi
  echo "services: $bin/$program"
done
echo "services: $(command -v redis-server)"
