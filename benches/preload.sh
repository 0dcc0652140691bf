#!/usr/bin/env bash
# Soft delete with the library preloaded, side by side in one run (pgbench,
# one client, simple protocol so every statement is planned):
#   - single-row DELETEs on a soft-delete table vs the equivalent
#     UPDATE ... SET deleted_at = now() WHERE id = :id AND deleted_at IS NULL;
#   - ordinary DML (pgbench's TPC-B-like mix plus a DELETE/INSERT pair) on a
#     cluster that preloads pg_invariants vs one that does not.
#   benches/preload.sh [seconds=10] [rounds=3]
set -euo pipefail
seconds=${1:-10}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap" >/dev/null
. "$root/scripts/lib.sh"
[ "${SKIP_INSTALL:-}" = 1 ] || cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null

pre=/tmp/pg_invariants_bench_preload
plain=/tmp/pg_invariants_bench_plain
settings=("shared_buffers = '512MB'" "synchronous_commit = off" "autovacuum = off")
start_cluster "$pre" 28920 "${settings[@]}" "shared_preload_libraries = 'pg_invariants'"
start_cluster "$plain" 28921 "${settings[@]}"
trap 'stop_cluster "$pre"; stop_cluster "$plain"' EXIT
sql() { psql -X -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -v ON_ERROR_STOP=1 "${@:2}"; }

rows=100000
sql 28920 -c "CREATE EXTENSION pg_invariants" >/dev/null
for t in soft upd; do
  sql 28920 -c "CREATE TABLE $t (id int PRIMARY KEY, note text, deleted_at timestamptz)"
  sql 28920 -c "INSERT INTO $t SELECT i, 'n' || i, NULL FROM generate_series(1, $rows) i"
done
sql 28920 -c "SELECT invariants.enable_soft_delete('soft')" >/dev/null
for port in 28920 28921; do
  "$PG_BIN/pgbench" -q -i -s 5 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
  sql "$port" -c "CREATE TABLE churn (id int PRIMARY KEY, v int)"
  sql "$port" -c "INSERT INTO churn SELECT i, i FROM generate_series(1, $rows) i"
done

scripts=$(mktemp -d)
cat >"$scripts/soft.sql" <<SQL
\set id random(1, $rows)
DELETE FROM soft WHERE id = :id;
SQL
cat >"$scripts/upd.sql" <<SQL
\set id random(1, $rows)
UPDATE upd SET deleted_at = now() WHERE id = :id AND deleted_at IS NULL;
SQL
cat >"$scripts/churn.sql" <<SQL
\set id random(1, $rows)
DELETE FROM churn WHERE id = :id;
INSERT INTO churn VALUES (:id, :id) ON CONFLICT (id) DO NOTHING;
SQL

tps() { # port script...
  local port=$1
  shift
  "$PG_BIN/pgbench" -n -T "$seconds" -c 1 -M simple -h 127.0.0.1 -p "$port" -U postgres "$@" postgres 2>/dev/null |
    awk '/^tps/ { print $3; exit }'
}
median_of() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

declare -A r
for round in $(seq 1 "$rounds"); do
  sql 28920 -c "BEGIN" -c "SET LOCAL invariants.allow_undelete = on" -c "UPDATE soft SET deleted_at = NULL" -c "COMMIT" \
    -c "UPDATE upd SET deleted_at = NULL" -c "VACUUM soft, upd"
  r[soft]+="$(tps 28920 -f "$scripts/soft.sql") "
  r[upd]+="$(tps 28920 -f "$scripts/upd.sql") "
  r[pre]+="$(tps 28920 -b tpcb-like -f "$scripts/churn.sql") "
  r[plain]+="$(tps 28921 -b tpcb-like -f "$scripts/churn.sql") "
  echo "round $round done"
done
echo
echo "== transactions per second, median of $rounds rounds of ${seconds}s (higher is better)"
for k in soft upd pre plain; do r[$k]=$(echo "${r[$k]}" | median_of); done
printf '%-46s %10s\n' "single-row DELETE on a soft-delete table" "${r[soft]}" \
  "equivalent UPDATE ... SET deleted_at = now()" "${r[upd]}" \
  "ordinary DML, library preloaded" "${r[pre]}" \
  "ordinary DML, not preloaded" "${r[plain]}"
echo "soft DELETE time / UPDATE time:             $(ratio "${r[upd]}" "${r[soft]}")  (target <= 1.20)"
echo "ordinary DML time, preloaded / not:         $(ratio "${r[plain]}" "${r[pre]}")  (target <= 1.02)"
