#!/usr/bin/env bash
# Live-status load (issue 4): one release `serve` process on PostgreSQL with
# REDIS_URL, N WebSocket subscribers (graphql-transport-ws, one user and one
# connection each), events published through Redis at a fixed rate; reports
# delivery latency, events lost, memory per idle subscriber and server CPU.
# The load tool is benches/ws_load (a `cargo bench` target, not shipped).
# Needs PostgreSQL at TEST_DATABASE_URL and Redis at REDIS_URL.
# Usage: bench/ws_load.sh [subscribers=10000] [events/s=1000] [seconds=30]
set -euo pipefail
cd "$(dirname "$0")/.."
admin="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export WS_LOAD_SUBSCRIBERS="${1:-10000}" WS_LOAD_RATE="${2:-1000}" WS_LOAD_SECONDS="${3:-30}"

# The tool and the server each hold one descriptor per subscriber.
need=$((WS_LOAD_SUBSCRIBERS + 1024))
if (( $(ulimit -n) < need )); then
  ulimit -n "$need" 2>/dev/null || { echo "ulimit -n is $(ulimit -n) (hard $(ulimit -Hn)); need $need" >&2; exit 1; }
fi

cargo build --release --quiet --bin exchange-connections
cargo bench --quiet --bench ws_load --no-run
bin=target/release/exchange-connections
db="ec_ws_load"
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -qc "CREATE DATABASE $db"
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $db" || true' EXIT
owner_db="${admin%/*}/$db"
DATABASE_URL="$owner_db" $bin migrate
# The processes refuse the owner (a superuser, which row-level security does
# not bind): a login role in exchange_connections_app, as in production.
psql "$owner_db" -qc "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ec_bench_api') THEN
  CREATE ROLE ec_bench_api LOGIN PASSWORD 'ec-bench'; END IF; END \$\$" -qc "GRANT exchange_connections_app TO ec_bench_api"
export DATABASE_URL=$(python3 bench/as_role.py "$owner_db" ec_bench_api ec-bench)

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); uptime: $(uptime)"
cargo bench --quiet --bench ws_load
