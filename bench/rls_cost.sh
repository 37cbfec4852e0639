#!/usr/bin/env bash
# Benchmark (issue 5): what row-level security costs on the `connections`
# benchmark (bench/connections.sh: one user with 20 connections, 64 clients).
# Two builds, each on its own database loaded alike, measured in alternation
# in one run so that the machine's load hits both alike:
#   without: BASELINE, a release build of the commit before row-level
#            security, serving as the owner (no policies, no transaction or
#            set_config per request);
#   with:    this tree's release build, serving as a login role granted
#            exchange_connections_app (policies forced, one transaction and
#            one set_config per request).
# Needs wrk (apt-get install wrk) and PostgreSQL at TEST_DATABASE_URL.
# Usage: [BIN=…] bench/rls_cost.sh BASELINE_BINARY [duration, default 20s] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
baseline="${1:?usage: bench/rls_cost.sh BASELINE_BINARY [duration] [rounds]}"
duration="${2:-20s}"
rounds="${3:-3}"
admin="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
secret="bench-jwt-secret-that-is-long-enough-0123456789"
# BIN: an already built binary of this tree instead of building it here.
bin="${BIN:-target/release/exchange-connections}"
[ -n "${BIN:-}" ] || cargo build --release --quiet
key=$($bin keygen)
export JWT_SECRET="$secret" ENCRYPTION_KEYS="$key" LOG_FORMAT=json RUST_LOG=warn
# One user and one IP make every request: lift the abuse limits (429s would be measured instead).
export RATE_LIMIT_PER_IP=1000000000 RATE_LIMIT_PER_USER=1000000000
pids=()
declare -A serve_pid
# cpu_ticks PID: user + system CPU of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

# start NAME BINARY PORT: a fresh database migrated by BINARY; serves on PORT.
start() {
  local name=$1 binary=$2 port=$3 db url
  psql "$admin" -qc "DROP DATABASE IF EXISTS $name" -qc "CREATE DATABASE $name"
  db="${admin%/*}/$name"
  DATABASE_URL="$db" $binary migrate
  url="$db"
  if psql "$db" -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'exchange_connections_app'" | grep -q 1 &&
     psql "$db" -qtAc "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'exchange_keys'" | grep -q t; then
    psql "$db" -qc "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ec_bench_api') THEN
      CREATE ROLE ec_bench_api LOGIN PASSWORD 'ec-bench'; END IF; END \$\$" -qc "GRANT exchange_connections_app TO ec_bench_api"
    url=$(python3 bench/as_role.py "$db" ec_bench_api ec-bench)
  fi
  DATABASE_URL="$url" LISTEN_ADDR="127.0.0.1:$port" $binary serve > "/tmp/$name.log" 2>&1 &
  pids+=($!)
  serve_pid[$port]=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  for i in $(seq -w 1 20); do
    k="BENCHKEY${i}$(printf 'K%.0s' $(seq 1 54))"
    s="BENCHSECRET${i}$(printf 's%.0s' $(seq 1 51))"
    curl -sf "http://127.0.0.1:$port/graphql" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      -d "{\"query\":\"mutation(\$i: CreateConnectionInput!) { createConnection(input: \$i) { id } }\",\"variables\":{\"i\":{\"label\":\"acct $i\",\"testFirst\":false,\"credentials\":{\"exchange\":\"BINANCE\",\"apiKey\":\"$k\",\"apiSecret\":\"$s\"}}}}" >/dev/null
  done
  count=$(curl -sf "http://127.0.0.1:$port/graphql" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"query":"{ connections { id } }"}' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["connections"]))')
  echo "$name: $count connections for the user, serving as ${url%%@*}@…"
}

user=$(python3 -c 'import uuid; print(uuid.uuid4())')
export TOKEN=$(python3 bench/mint_token.py "$secret" "$user" 7200)
start ec_bench_without "$baseline" 18081
start ec_bench_with "$bin" 18082

for round in $(seq 1 "$rounds"); do
  for variant in without with; do
    port=$([ "$variant" = without ] && echo 18081 || echo 18082)
    echo "== round $round, $variant RLS; load before: $(uptime | sed 's/.*load average: //')"
    before=$(cpu_ticks "${serve_pid[$port]}")
    out=$(wrk -t2 -c64 -d"$duration" --latency -s bench/connections.lua "http://127.0.0.1:$port/graphql")
    ticks=$(( $(cpu_ticks "${serve_pid[$port]}") - before ))
    echo "$out" | tail -3
    # The service's own CPU per request (PostgreSQL's is shared with whatever else runs).
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    echo "service CPU: $(python3 -c "print(f'{$ticks * 1000 / $(getconf CLK_TCK) / $total * 1000:.0f}')") µs per request"
  done
done
