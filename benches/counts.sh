#!/usr/bin/env bash
# Cross-table counts: inserting N child rows (and the parent's count) in one
# transaction, with and without invariants.require_count, side by side.
#   benches/counts.sh [rows=100000] [rounds=5]
set -euo pipefail
rows=${1:-100000}
rounds=${2:-5}
. "$(dirname "$0")/common.sh"
bench_start

for v in plain ours; do
  bench_sql -q <<SQL
CREATE TABLE s_$v (id int PRIMARY KEY, total int NOT NULL DEFAULT 0);
CREATE TABLE c_$v (id bigserial PRIMARY KEY, session_id int NOT NULL REFERENCES s_$v, email text);
CREATE INDEX ON c_$v (session_id);
SQL
done
bench_sql -q -c "SELECT invariants.require_count('s_ours', 'total', 'c_ours', 'session_id')" >/dev/null

declare -A times
for round in $(seq 1 "$rounds"); do
  order=(plain ours)
  [ $((round % 2)) -eq 0 ] && order=(ours plain)
  for v in "${order[@]}"; do
    bench_sql -q -c "TRUNCATE c_$v, s_$v" >/dev/null
    # One transaction: the session row, its children, and (check_counts())
    # the commit-time check.
    times[$v]+="$(time_ms "INSERT INTO s_$v VALUES (1, $rows); INSERT INTO c_$v (session_id, email) SELECT 1, 'p' || i FROM generate_series(1, $rows) i; SELECT invariants.check_counts()" "c_$v") "
  done
  echo "round $round done"
done
echo
echo "== insert of $rows children in one transaction, median of $rounds rounds (ms)"
p=$(echo "${times[plain]}" | median_of)
o=$(echo "${times[ours]}" | median_of)
printf '%-8s %10s\n' plain "$p" ours "$o"
echo "ours / plain: $(ratio "$o" "$p")  (target <= 1.50)"
