#!/usr/bin/env bash
# Soft delete, side by side in one run, trigger mode (no preloading):
#   a DELETE of N rows converted to a soft delete, against the equivalent
#   UPDATE ... SET deleted_at = now() on a plain table;
#   an ordinary UPDATE of N live rows of a soft-delete table (which carries
#   the trigger that keeps deleted rows deleted) against the same UPDATE on
#   a plain table.
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
    # Every row live again (the owner's switch reaches deleted rows).
    bench_sql -q -c "BEGIN" -c "SET LOCAL invariants.allow_undelete = on" -c "UPDATE sd_$v SET deleted_at = NULL" -c "COMMIT" >/dev/null
    times[edit_$v]+="$(time_ms "UPDATE sd_$v SET customer_id = customer_id + 1" "sd_$v") "
    if [ "$v" = update ]; then
      times[$v]+="$(time_ms "UPDATE sd_update SET deleted_at = now() WHERE deleted_at IS NULL" sd_update) "
    else
      times[$v]+="$(time_ms "DELETE FROM sd_ours" sd_ours) "
    fi
  done
  echo "round $round done"
done

report() {
  local stat=$1
  echo
  echo "== $rows rows, $stat of $rounds rounds (ms)"
  local u o eu eo
  u=$(echo "${times[update]}" | $stat)
  o=$(echo "${times[ours]}" | $stat)
  eu=$(echo "${times[edit_update]}" | $stat)
  eo=$(echo "${times[edit_ours]}" | $stat)
  printf '%-44s %10s\n' "UPDATE SET deleted_at (plain table)" "$u" "DELETE as soft delete" "$o" \
    "UPDATE of live rows, plain table" "$eu" "UPDATE of live rows, soft-delete table" "$eo"
  echo "soft DELETE / UPDATE:                        $(ratio "$o" "$u")  (target <= 1.50)"
  echo "UPDATE on a soft-delete table / plain table: $(ratio "$eo" "$eu")  (the cost of keeping deleted rows deleted)"
}
report median_of
report min_of
