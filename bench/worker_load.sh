#!/usr/bin/env bash
# Health-monitor load (issue 4): N Kraken connections all due at once, one
# release `worker` process on PostgreSQL (+ Redis) checking them against the
# API tests' mock Kraken (which verifies every signature and nonce); reports
# checks per second, the worker's CPU, and checks/s per core.
# The load tool is benches/worker_load (a `cargo bench` target, not shipped).
# Needs PostgreSQL at TEST_DATABASE_URL and, unless REDIS_URL=off, Redis.
# Usage: bench/worker_load.sh [connections=10000] [seconds=30]
#   (worker settings such as WORKER_CONCURRENCY=32 are passed through)
set -euo pipefail
cd "$(dirname "$0")/.."
admin="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export WORKER_LOAD_CONNECTIONS="${1:-10000}" WORKER_LOAD_SECONDS="${2:-30}"

cargo build --release --quiet --bin exchange-connections
cargo bench --quiet --bench worker_load --no-run
bin=target/release/exchange-connections
db="ec_worker_load"
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -qc "CREATE DATABASE $db"
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $db" || true' EXIT
owner_db="${admin%/*}/$db"
DATABASE_URL="$owner_db" $bin migrate
# The processes refuse the owner (a superuser, which row-level security does
# not bind): a login role in exchange_connections_worker, as in production.
psql "$owner_db" -qc "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ec_bench_worker') THEN
  CREATE ROLE ec_bench_worker LOGIN PASSWORD 'ec-bench'; END IF; END \$\$" -qc "GRANT exchange_connections_worker TO ec_bench_worker"
export DATABASE_URL=$(python3 bench/as_role.py "$owner_db" ec_bench_worker ec-bench)

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); uptime: $(uptime)"
cargo bench --quiet --bench worker_load
