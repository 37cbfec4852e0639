#!/usr/bin/env bash
# Benchmark (issue 2): one user with 20 connections, 64 concurrent clients
# calling `connections` on PostgreSQL; then idle RSS and time to /readyz on
# the embedded SQLite default. Needs wrk (apt-get install wrk) and PostgreSQL.
# Usage: bench/connections.sh [duration, default 20s]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20s}"
admin="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
bin=target/release/exchange-connections
port=18080
secret="bench-jwt-secret-that-is-long-enough-0123456789"

cargo build --release --quiet
key=$($bin keygen)
psql "$admin" -qc "DROP DATABASE IF EXISTS ec_bench" -qc "CREATE DATABASE ec_bench"
db="${admin%/*}/ec_bench"
export JWT_SECRET="$secret" ENCRYPTION_KEYS="$key" LOG_FORMAT=json RUST_LOG=warn
# One user and one IP make every request: lift the abuse limits (429s would be measured instead).
export RATE_LIMIT_PER_IP=1000000000 RATE_LIMIT_PER_USER=1000000000
DATABASE_URL="$db" $bin migrate
# serve refuses the owner (a superuser): a login role in the API's group role, as in production.
psql "$db" -qc "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ec_bench_api') THEN
  CREATE ROLE ec_bench_api LOGIN PASSWORD 'ec-bench'; END IF; END \$\$" -qc "GRANT exchange_connections_app TO ec_bench_api"
app_db=$(python3 bench/as_role.py "$db" ec_bench_api ec-bench)
DATABASE_URL="$app_db" LISTEN_ADDR="127.0.0.1:$port" $bin serve > /tmp/ec-bench.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

user=$(python3 -c 'import uuid; print(uuid.uuid4())')
export TOKEN=$(python3 bench/mint_token.py "$secret" "$user" 7200)
for i in $(seq -w 1 20); do
  k="BENCHKEY${i}$(printf 'K%.0s' $(seq 1 54))"
  s="BENCHSECRET${i}$(printf 's%.0s' $(seq 1 51))"
  curl -sf "http://127.0.0.1:$port/graphql" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"query\":\"mutation(\$i: CreateConnectionInput!) { createConnection(input: \$i) { id } }\",\"variables\":{\"i\":{\"label\":\"acct $i\",\"testFirst\":false,\"credentials\":{\"exchange\":\"BINANCE\",\"apiKey\":\"$k\",\"apiSecret\":\"$s\"}}}}" >/dev/null
done
count=$(curl -sf "http://127.0.0.1:$port/graphql" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"query":"{ connections { id } }"}' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["connections"]))')
echo "connections for the user: $count"
wrk -t2 -c64 -d"$duration" --latency -s bench/connections.lua "http://127.0.0.1:$port/graphql" | tail -4
kill $pid; wait $pid 2>/dev/null || true
trap - EXIT

# Embedded default: time from process start to /readyz, and idle RSS.
dir=$(mktemp -d)
unset JWT_SECRET ENCRYPTION_KEYS
for run in 1 2 3; do
  rm -rf "$dir/data"
  start=$(date +%s%N)
  (cd "$dir" && LISTEN_ADDR="127.0.0.1:$port" exec "$OLDPWD/$bin" > /dev/null 2>&1) &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.005; done
  ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  sleep 2
  rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  echo "embedded run $run: ready in ${ready_ms} ms (fresh data dir), idle RSS $((rss_kib / 1024)) MiB"
  kill $pid; wait $pid 2>/dev/null || true
done
rm -rf "$dir"
