#!/usr/bin/env bash
# Audit of DELETE and TRUNCATE, side by side in one run:
#   DELETE of N rows: plain; a row-level PL/pgSQL to_jsonb(OLD) audit trigger
#   (the common pattern); a statement-level PL/pgSQL transition-table
#   trigger; pg_invariants. TRUNCATE of N rows: plain; pg_invariants' capture.
# The PL/pgSQL triggers write to copies of invariants.audit_log (same
# columns, defaults and indexes), so every variant writes the same log.
#   benches/audit.sh [rows=1000000] [rounds=3]
set -euo pipefail
rows=${1:-1000000}
rounds=${2:-3}
. "$(dirname "$0")/common.sh"
bench_start

bench_sql -q <<SQL
CREATE TABLE log_row (LIKE invariants.audit_log INCLUDING ALL);
CREATE TABLE log_stmt (LIKE invariants.audit_log INCLUDING ALL);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO log_row (op, tbl, schema_name, table_name, row_data, statement)
    VALUES ('DELETE', TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, to_jsonb(OLD), current_query());
    RETURN OLD;
END \$\$;
CREATE FUNCTION audit_stmt() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO log_stmt (op, tbl, schema_name, table_name, row_data, statement)
    SELECT 'DELETE', TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, to_jsonb(o), current_query() FROM old_rows o;
    RETURN NULL;
END \$\$;
SQL
variants=(plain row stmt ours)
for v in "${variants[@]}" truncate_plain truncate_ours; do
  bench_sql -q -c "CREATE TABLE d_$v (id bigint PRIMARY KEY, customer_id int, amount numeric(12,2), note text, at timestamptz)"
done
bench_sql -q <<'SQL'
CREATE TRIGGER audit AFTER DELETE ON d_row FOR EACH ROW EXECUTE FUNCTION audit_row();
CREATE TRIGGER audit AFTER DELETE ON d_stmt REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit_stmt();
SELECT invariants.enable_audit('d_ours');
SELECT invariants.enable_audit('d_truncate_ours', truncate_capture_limit => 100000000);
SQL

fill() {
  bench_sql -q -c "INSERT INTO $1 SELECT i, i % 1000, i * 1.25, 'deal note ' || i, now() FROM generate_series(1, $rows) i" >/dev/null
}
reset_logs() {
  # Keep every log the same size from round to round.
  bench_sql -q -c "TRUNCATE log_row, log_stmt" -c "SELECT invariants.prune_audit('0 seconds')" >/dev/null
}

declare -A times
for round in $(seq 1 "$rounds"); do
  reset_logs
  for v in "${variants[@]}" truncate_plain truncate_ours; do fill "d_$v"; done
  n=${#variants[@]}
  for i in $(seq 0 $((n - 1))); do
    v=${variants[$(((i + round) % n))]}
    times[$v]+="$(time_ms "DELETE FROM d_$v" "d_$v") "
  done
  times[truncate_plain]+="$(time_ms "TRUNCATE d_truncate_plain" "d_truncate_plain") "
  times[truncate_ours]+="$(time_ms "TRUNCATE d_truncate_ours" "d_truncate_ours") "
  echo "round $round done"
done

# report STAT: times and ratios, each variant's rounds reduced by STAT
# (median_of, or min_of: on a shared machine noise only adds time).
report() {
  local stat=$1 v
  declare -A m
  echo
  echo "== $rows-row DELETE and TRUNCATE, $stat of $rounds rounds (ms)"
  for v in "${variants[@]}" truncate_plain truncate_ours; do
    m[$v]=$(echo "${times[$v]}" | $stat)
    printf '%-16s %12s\n' "$v" "${m[$v]}"
  done
  echo "-- ratios"
  echo "row-level PL/pgSQL / ours:        $(ratio "${m[row]}" "${m[ours]}")  (target >= 3)"
  echo "ours / plain DELETE:              $(ratio "${m[ours]}" "${m[plain]}")  (target <= 8)"
  echo "ours / statement-level PL/pgSQL:  $(ratio "${m[ours]}" "${m[stmt]}")  (target <= 1.00, within noise)"
  echo "TRUNCATE with capture / plain:    $(ratio "${m[truncate_ours]}" "${m[truncate_plain]}")"
}
report median_of
report min_of
