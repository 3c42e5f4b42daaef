#!/usr/bin/env bash
# The local stack: the server on $PORT (3000) with SQLite at data/brain.db, serving web/dist,
# rebuilt and restarted when its sources or migrations change (as nodemon did for the ancestor).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo-watch >/dev/null 2>&1; then
  echo "installing cargo-watch (once)..."
  cargo install cargo-watch --locked
fi
[ -f .env ] || { cp .env.example .env; echo "created .env from .env.example"; }
mkdir -p data
export DATABASE_PATH="${DATABASE_PATH:-./data/brain.db}" WEB_DIR="${WEB_DIR:-web/dist}"
exec cargo watch --why -w server -w migrations -w Cargo.toml -x 'run -p server --bin brain-server'
