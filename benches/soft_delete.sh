#!/usr/bin/env bash
# Soft delete: a DELETE of N rows converted to a soft delete, side by side
# with the equivalent UPDATE ... SET deleted_at = now().
#   benches/soft_delete.sh [rows=100000] [rounds=5]
set -euo pipefail
rows=${1:-100000}
rounds=${2:-5}
. "$(dirname "$0")/common.sh"
bench_start

for v in update ours; do
  bench_sql -q -c "CREATE TABLE sd_$v (id bigint PRIMARY KEY, customer_id int, note text, deleted_at timestamptz)"
  bench_sql -q -c "INSERT INTO sd_$v SELECT i, i % 1000, 'note ' || i, NULL FROM generate_series(1, $rows) i"
done
bench_sql -q -c "SELECT invariants.enable_soft_delete('sd_ours')" >/dev/null

declare -A times
for round in $(seq 1 "$rounds"); do
  order=(update ours)
  [ $((round % 2)) -eq 0 ] && order=(ours update)
  for v in "${order[@]}"; do
    bench_sql -q -c "UPDATE sd_$v SET deleted_at = NULL" >/dev/null
    if [ "$v" = update ]; then
      times[$v]+="$(time_ms "UPDATE sd_update SET deleted_at = now() WHERE deleted_at IS NULL" sd_update) "
    else
      times[$v]+="$(time_ms "DELETE FROM sd_ours" sd_ours) "
    fi
  done
  echo "round $round done"
done
echo
echo "== $rows rows, median of $rounds rounds (ms)"
u=$(echo "${times[update]}" | median_of)
o=$(echo "${times[ours]}" | median_of)
printf '%-28s %10s\n' "UPDATE SET deleted_at" "$u" "DELETE as soft delete" "$o"
echo "soft DELETE / UPDATE: $(ratio "$o" "$u")  (target <= 1.50)"
