#!/usr/bin/env bash
# Audit and restore, side by side in one run, on a 7-column table (bigint
# key, int, three text, two timestamptz):
#   capture of a DELETE of N rows: plain (no capture); the E-Maj pattern (a
#   row trigger inserting OLD into a typed copy of the table); the jsonb
#   pattern (a row trigger inserting to_jsonb(OLD)); a statement-level
#   PL/pgSQL trigger over the transition table; pg_invariants;
#   capture of a TRUNCATE of N rows: plain; the E-Maj pattern (a BEFORE
#   TRUNCATE trigger copying the rows); pg_invariants;
#   restore of the deleted rows at N/100, N/10 and N rows (µs per row, so
#   that linearity shows): the floor (INSERT ... SELECT of a saved copy); the
#   E-Maj pattern's rollback (INSERT ... SELECT from its typed log); the
#   jsonb pattern's (INSERT ... SELECT jsonb_populate_record); pg_invariants;
#   then pg_invariants' restore of the same transaction again, right after
#   (it must restore nothing, fast). The logs are never analyzed.
#   log bytes per captured row, and the backend's peak memory (VmHWM) for a
#   restore of N rows and for the same restore again.
#   benches/audit.sh [rows=1000000] [rounds=3]
set -euo pipefail
rows=${1:-1000000}
rounds=${2:-3}
. "$(dirname "$0")/common.sh"
bench_start

columns=$audit_columns
bench_sql -q <<SQL
CREATE TABLE log_jsonb (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(),
                        txid xid8 NOT NULL DEFAULT pg_current_xact_id(), tbl regclass, row_data jsonb);
CREATE INDEX ON log_jsonb (txid);
CREATE TABLE log_stmt (LIKE log_jsonb INCLUDING ALL);
-- The E-Maj pattern: per table, a typed log with the table's columns and
-- the verb, time and transaction of each row.
CREATE TABLE log_emaj (LIKE log_jsonb INCLUDING ALL);
CREATE FUNCTION audit_jsonb() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO log_jsonb (tbl, row_data) VALUES (TG_RELID, to_jsonb(OLD));
    RETURN OLD;
END \$\$;
CREATE FUNCTION audit_stmt() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO log_stmt (tbl, row_data) SELECT TG_RELID, to_jsonb(o) FROM old_rows o;
    RETURN NULL;
END \$\$;
SQL
capture=(plain emaj jsonb stmt ours)
for v in "${capture[@]}" truncate_plain truncate_emaj truncate_ours floor; do
  bench_sql -q -c "CREATE TABLE d_$v ($columns)"
done
for v in emaj truncate_emaj; do
  bench_sql -q <<SQL
CREATE TABLE d_${v}_log (LIKE d_$v, emaj_verb text, emaj_at timestamptz DEFAULT now(),
                         emaj_txid xid8 DEFAULT pg_current_xact_id(), emaj_gid bigserial PRIMARY KEY);
CREATE INDEX ON d_${v}_log (emaj_txid);
CREATE FUNCTION d_${v}_log_row() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO d_${v}_log SELECT OLD.*, 'DEL';
    RETURN OLD;
END \$\$;
CREATE FUNCTION d_${v}_log_truncate() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO d_${v}_log SELECT d.*, 'TRU' FROM d_$v d;
    RETURN NULL;
END \$\$;
CREATE TRIGGER emaj AFTER DELETE ON d_$v FOR EACH ROW EXECUTE FUNCTION d_${v}_log_row();
CREATE TRIGGER emaj_truncate BEFORE TRUNCATE ON d_$v FOR EACH STATEMENT EXECUTE FUNCTION d_${v}_log_truncate();
SQL
done
bench_sql -q <<'SQL'
CREATE TRIGGER audit AFTER DELETE ON d_jsonb FOR EACH ROW EXECUTE FUNCTION audit_jsonb();
CREATE TRIGGER audit AFTER DELETE ON d_stmt REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit_stmt();
SELECT invariants.enable_audit('d_ours', truncate_capture_limit => 100000000);
SELECT invariants.enable_audit('d_truncate_ours', truncate_capture_limit => 100000000);
SQL

# fill TABLE [ROWS]
fill() {
  bench_sql -q -c "INSERT INTO $1 SELECT i, i % 1000, 'alpha ' || i, 'beta ' || (i % 97), 'gamma gamma ' || i,
                          now() - i * interval '1 second', now() + i * interval '1 minute'
                     FROM generate_series(1, ${2:-$rows}) i" >/dev/null
}
empty_logs() {
  bench_sql -q -c "TRUNCATE log_jsonb, log_stmt, d_emaj_log, d_truncate_emaj_log" \
    -c "SELECT invariants.prune_audit('0 seconds')" >/dev/null
}
# The txid of the last DELETE pg_invariants captured from TABLE.
last_txid() {
  bench_sql -tA -c "SELECT max(txid)::text FROM invariants.audit_capture WHERE tbl = '$1'::regclass AND op = 'DELETE'"
}
# time_restore VARIANT ROWS: deletes ROWS rows of the variant's table and
# restores them; prints ms.
time_restore() {
  local v=$1 n=$2
  case $v in
    floor)
      fill d_floor "$n"
      bench_sql -q -c "DROP TABLE IF EXISTS saved; CREATE TABLE saved AS SELECT * FROM d_floor; DELETE FROM d_floor" >/dev/null
      time_ms "INSERT INTO d_floor SELECT * FROM saved" d_floor ;;
    emaj)
      fill d_emaj "$n"
      bench_sql -q -c "TRUNCATE d_emaj_log" -c "DELETE FROM d_emaj" >/dev/null
      time_ms "INSERT INTO d_emaj SELECT id, n, a, b, c, t1, t2 FROM d_emaj_log WHERE emaj_verb = 'DEL' ORDER BY emaj_gid" d_emaj ;;
    jsonb)
      fill d_jsonb "$n"
      bench_sql -q -c "TRUNCATE log_jsonb" -c "DELETE FROM d_jsonb" >/dev/null
      time_ms "INSERT INTO d_jsonb SELECT r.* FROM log_jsonb l, jsonb_populate_record(NULL::d_jsonb, l.row_data) r ORDER BY l.id" d_jsonb ;;
    ours)
      fill d_ours "$n"
      bench_sql -q -c "DELETE FROM d_ours" >/dev/null
      time_ms "SELECT * FROM invariants.restore('$(last_txid d_ours)')" d_ours ;;
  esac
  bench_sql -q -c "TRUNCATE d_$v" >/dev/null
}

declare -A times
sizes=($((rows / 100)) $((rows / 10)) "$rows")
restore_variants=(floor emaj jsonb ours)
for round in $(seq 1 "$rounds"); do
  empty_logs
  for v in "${capture[@]}" truncate_plain truncate_emaj truncate_ours; do fill "d_$v"; done
  n=${#capture[@]}
  for i in $(seq 0 $((n - 1))); do
    v=${capture[$(((i + round) % n))]}
    times[$v]+="$(time_ms "DELETE FROM d_$v" "d_$v") "
  done
  for v in truncate_plain truncate_emaj truncate_ours; do
    times[$v]+="$(time_ms "TRUNCATE d_$v" "d_$v") "
  done
  # Log bytes per row, measured once (the logs hold one capture of N rows).
  if [ "$round" = 1 ]; then
    bytes_emaj=$(bench_sql -tA -c "SELECT pg_total_relation_size('d_emaj_log') / $rows")
    bytes_jsonb=$(bench_sql -tA -c "SELECT pg_total_relation_size('log_jsonb') / $rows")
    bytes_ours=$(audit_log_bytes_per_row "$rows")
  fi
  empty_logs
  for size in "${sizes[@]}"; do
    m=${#restore_variants[@]}
    for i in $(seq 0 $((m - 1))); do
      v=${restore_variants[$(((i + round) % m))]}
      times[restore_${v}_$size]+="$(time_restore "$v" "$size") "
      empty_logs
    done
  done
  # The same restore again, right after a large one: nothing to restore.
  fill d_ours
  bench_sql -q -c "DELETE FROM d_ours" >/dev/null
  txid=$(last_txid d_ours)
  times[restore_first]+="$(time_ms "SELECT * FROM invariants.restore('$txid')" d_ours) "
  times[restore_again]+="$(time_ms "SELECT * FROM invariants.restore('$txid')" d_ours) "
  bench_sql -q -c "TRUNCATE d_ours" >/dev/null
  empty_logs
  echo "round $round done"
done

# Peak memory of one backend restoring N rows, then the same again.
fill d_ours
bench_sql -q -c "DELETE FROM d_ours" >/dev/null
txid=$(last_txid d_ours)
hwm() {
  bench_sql -tA <<SQL | tail -1
SELECT count(*) FROM invariants.restore('$txid');
SELECT concat_ws(' ', substring(s FROM 'VmHWM:\s+(\d+)'), substring(s FROM 'RssShmem:\s+(\d+)'),
                 substring(s FROM 'RssAnon:\s+(\d+)'))
  FROM pg_read_file('/proc/self/status') s;
SQL
}
hwm_first=$(hwm)
hwm_again=$(hwm)

# report STAT: times and ratios, each variant's rounds reduced by STAT
# (median_of, or min_of: on a shared machine noise only adds time).
report() {
  local stat=$1 v size
  declare -A m
  for v in "${!times[@]}"; do m[$v]=$(echo "${times[$v]}" | $stat); done
  echo
  echo "== capture of a $rows-row DELETE and TRUNCATE, $stat of $rounds rounds (ms)"
  for v in "${capture[@]}" truncate_plain truncate_emaj truncate_ours; do
    printf '%-16s %12s\n' "$v" "${m[$v]}"
  done
  echo "-- capture ratios"
  echo "jsonb row trigger / ours:          $(ratio "${m[jsonb]}" "${m[ours]}")  (target >= 3)"
  echo "E-Maj pattern / ours:              $(ratio "${m[emaj]}" "${m[ours]}")  (ours the fastest: > 1)"
  echo "ours / statement-level PL/pgSQL:   $(ratio "${m[ours]}" "${m[stmt]}")  (target <= 1.00)"
  echo "ours / plain DELETE:               $(ratio "${m[ours]}" "${m[plain]}")  (target <= 8)"
  echo "TRUNCATE: ours / E-Maj pattern:    $(ratio "${m[truncate_ours]}" "${m[truncate_emaj]}")  (target <= 1.00)"
  echo "== restore, $stat of $rounds rounds (ms, and µs per row)"
  printf '%-8s' "rows"
  for v in "${restore_variants[@]}"; do printf '%22s' "$v"; done
  echo
  for size in "${sizes[@]}"; do
    printf '%-8s' "$size"
    for v in "${restore_variants[@]}"; do
      local ms=${m[restore_${v}_$size]}
      printf '%12s %7s µs' "$ms" "$(awk -v t="$ms" -v n="$size" 'BEGIN { printf "%.2f", t * 1000 / n }')"
    done
    echo
  done
  echo "-- restore ratios at $rows rows"
  echo "ours / E-Maj pattern rollback:     $(ratio "${m[restore_ours_$rows]}" "${m[restore_emaj_$rows]}")  (target <= 1.00)"
  echo "ours / floor (INSERT ... SELECT):  $(ratio "${m[restore_ours_$rows]}" "${m[restore_floor_$rows]}")  (moonshot <= 2.00)"
  echo "ours / jsonb pattern restore:      $(ratio "${m[restore_ours_$rows]}" "${m[restore_jsonb_$rows]}")"
  echo "same restore again / first:        $(ratio "${m[restore_again]}" "${m[restore_first]}")  (target <= 0.01; ${m[restore_again]} ms after ${m[restore_first]} ms)"
}
report median_of
report min_of
echo
echo "== log bytes per captured row"
echo "E-Maj pattern (typed log):  $bytes_emaj"
echo "jsonb pattern:              $bytes_jsonb"
echo "pg_invariants:              $bytes_ours   (ours / typed: $(ratio "$bytes_ours" "$bytes_emaj"), target <= 1.00)"
echo "== backend memory restoring $rows rows (kB: peak resident VmHWM, of it shared buffers touched RssShmem, private RssAnon)"
echo "first restore:  $hwm_first"
echo "the same again: $hwm_again"
