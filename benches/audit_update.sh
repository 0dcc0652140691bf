#!/usr/bin/env bash
# UPDATE capture and its undo, side by side in one run: an UPDATE of one
# column of every row of an N-row, 7-column table (bigint key, int, three
# text, two timestamptz):
#   plain (no capture); a row-level PL/pgSQL trigger logging to_jsonb(OLD)
#   and to_jsonb(NEW) (the common pattern); a statement-level PL/pgSQL
#   trigger logging both images from the OLD and NEW transition tables;
#   pg_invariants (enable_audit(..., updates => true));
# then pg_invariants' restore of that UPDATE's transaction (every row
# reverted) against the UPDATE itself, and the log bytes per updated row.
#   benches/audit_update.sh [rows=1000000] [rounds=3]
set -euo pipefail
rows=${1:-1000000}
rounds=${2:-3}
. "$(dirname "$0")/common.sh"
bench_start

columns=$audit_columns
variants=(plain row stmt ours)
for v in "${variants[@]}"; do
  bench_sql -q -c "CREATE TABLE u_$v ($columns)"
  bench_sql -q -c "INSERT INTO u_$v SELECT i, i % 1000, 'alpha ' || i, 'beta ' || (i % 97), 'gamma gamma ' || i,
                          now() - i * interval '1 second', now() + i * interval '1 minute'
                     FROM generate_series(1, $rows) i" >/dev/null
done
bench_sql -q <<'SQL'
CREATE TABLE log_row (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(),
                      txid xid8 NOT NULL DEFAULT pg_current_xact_id(), tbl regclass, old_data jsonb, new_data jsonb);
CREATE INDEX ON log_row (txid);
CREATE TABLE log_stmt (LIKE log_row INCLUDING ALL);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log_row (tbl, old_data, new_data) VALUES (TG_RELID, to_jsonb(OLD), to_jsonb(NEW));
    RETURN NEW;
END $$;
CREATE FUNCTION audit_stmt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log_stmt (tbl, old_data, new_data)
    SELECT TG_RELID, to_jsonb(o), to_jsonb(nw) FROM old_rows o JOIN new_rows nw USING (id);
    RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER UPDATE ON u_row FOR EACH ROW EXECUTE FUNCTION audit_row();
CREATE TRIGGER audit AFTER UPDATE ON u_stmt REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit_stmt();
SELECT invariants.enable_audit('u_ours', updates => true);
SQL

empty_logs() {
  bench_sql -q -c "TRUNCATE log_row, log_stmt" -c "SELECT invariants.prune_audit('0 seconds')" >/dev/null
}
last_txid() {
  bench_sql -tA -c "SELECT max(txid)::text FROM invariants.audit_capture WHERE tbl = 'u_ours'::regclass AND op = 'UPDATE'"
}

declare -A times
for round in $(seq 1 "$rounds"); do
  empty_logs
  n=${#variants[@]}
  for i in $(seq 0 $((n - 1))); do
    v=${variants[$(((i + round) % n))]}
    times[$v]+="$(time_ms "UPDATE u_$v SET n = n + 1" "u_$v") "
  done
  if [ "$round" = 1 ]; then
    bytes_row=$(bench_sql -tA -c "SELECT pg_total_relation_size('log_row') / $rows")
    bytes_stmt=$(bench_sql -tA -c "SELECT pg_total_relation_size('log_stmt') / $rows")
    bytes_ours=$(audit_log_bytes_per_row "$rows")
  fi
  times[revert]+="$(time_ms "SELECT * FROM invariants.restore('$(last_txid)')" u_ours) "
  reverted=$(bench_sql -tA -c "SELECT count(*) FROM u_ours WHERE n = id % 1000")
  [ "$reverted" = "$rows" ] || { echo "the restore left $((rows - reverted)) rows unreverted"; exit 1; }
  echo "round $round done"
done

report() {
  local stat=$1 v
  declare -A m
  for v in "${!times[@]}"; do m[$v]=$(echo "${times[$v]}" | $stat); done
  echo
  echo "== UPDATE of one column of $rows rows, $stat of $rounds rounds (ms)"
  for v in "${variants[@]}" revert; do
    printf '%-8s %12s\n' "$v" "${m[$v]}"
  done
  echo "-- ratios"
  echo "row-level to_jsonb trigger / ours:   $(ratio "${m[row]}" "${m[ours]}")  (target >= 4)"
  echo "ours / statement-level PL/pgSQL:     $(ratio "${m[ours]}" "${m[stmt]}")  (target < 1)"
  echo "ours / plain UPDATE:                 $(ratio "${m[ours]}" "${m[plain]}")"
  echo "revert of all rows / ours UPDATE:    $(ratio "${m[revert]}" "${m[ours]}")  (target <= 2)"
}
report median_of
report min_of
echo
echo "== log bytes per updated row"
echo "row-level trigger (old and new jsonb): $bytes_row"
echo "statement-level PL/pgSQL:              $bytes_stmt"
echo "ours (key and changed column):         $bytes_ours"
echo "ours / row-level trigger:              $(ratio "$bytes_ours" "$bytes_row")  (target <= 0.5)"
