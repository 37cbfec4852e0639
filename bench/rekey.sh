#!/usr/bin/env bash
# Benchmark (issue 5): `rekey` throughput on PostgreSQL with 100,000
# connections (200,000 secrets) sealed under an old key, re-encrypted under a
# new primary; then a second run (nothing to do), a dry run with the new key
# alone (must find nothing to re-encrypt and nothing unreadable), and the
# cost of the `stored_secrets` gauge's query. Needs PostgreSQL at
# TEST_DATABASE_URL and python3 with `cryptography`.
# Usage: bench/rekey.sh [connections, default 100000] [batch size, default 500] [jobs, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-100000}"
batch="${2:-500}"
jobs="${3:-2}"
admin="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
bin=target/release/exchange-connections

cargo build --release --quiet
psql "$admin" -qc "DROP DATABASE IF EXISTS ec_bench_rekey" -qc "CREATE DATABASE ec_bench_rekey"
db="${admin%/*}/ec_bench_rekey"
export LOG_FORMAT=text RUST_LOG=warn DATABASE_URL="$db"
$bin migrate
old=$($bin keygen)
new=$($bin keygen)

start=$(date +%s%N)
python3 bench/seed_rekey.py "$old" "$count" | psql -q "$db"
echo "seeded $count connections in $(( ($(date +%s%N) - start) / 1000000 )) ms"

run() {
  local label=$1; shift
  local start end
  start=$(date +%s%N)
  "$@" > /tmp/ec-bench-rekey.out
  end=$(date +%s%N)
  echo "== $label: $(( (end - start) / 1000000 )) ms wall (process start to exit)"
  head -1 /tmp/ec-bench-rekey.out
  tail -2 /tmp/ec-bench-rekey.out
}

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
run "rekey --batch-size $batch --jobs $jobs" env ENCRYPTION_KEYS="$new,$old" $bin rekey --batch-size "$batch" --jobs "$jobs"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
run "rekey again (nothing to do)" env ENCRYPTION_KEYS="$new,$old" $bin rekey --batch-size "$batch" --jobs "$jobs"
run "rekey --dry-run with only the new key" env ENCRYPTION_KEYS="$new" $bin rekey --dry-run --batch-size "$batch"
echo "== stored_secrets gauge query (serve runs it once a minute):"
psql "$db" -Atc "EXPLAIN (ANALYZE, TIMING OFF) SELECT key_version,
  SUM(CASE WHEN api_key_encrypted IS NULL THEN 0 ELSE 1 END) + SUM(CASE WHEN api_secret_encrypted IS NULL THEN 0 ELSE 1 END)
  + SUM(CASE WHEN passphrase_encrypted IS NULL THEN 0 ELSE 1 END) + SUM(CASE WHEN access_token_encrypted IS NULL THEN 0 ELSE 1 END) AS secrets
  FROM exchange_keys GROUP BY key_version" | grep "Execution Time"
psql "$admin" -qc "DROP DATABASE ec_bench_rekey"
