#!/usr/bin/env bash
# Row-state rules: 1M-row UPDATE side by side with no trigger, a CHECK
# constraint, a no-op C trigger (suppress_redundant_updates_trigger, the floor
# of any row trigger), the same no-op trigger limited to UPDATE OF status (the
# floor of any BEFORE UPDATE OF trigger on updates of other columns), the
# incident's PL/pgSQL trigger, and pg_invariants.
#   benches/rules.sh [rows] [rounds]
# Each round times every variant once, in a rotated order; medians are shown.
set -euo pipefail
rows=${1:-1000000}
rounds=${2:-5}
. "$(dirname "$0")/common.sh"
bench_start

variants=(none check noop noop_of plpgsql ours)
echo "== setting up ${#variants[@]} tables of $rows rows"
for v in "${variants[@]}"; do
  bench_sql -q <<SQL
CREATE TABLE t_$v (id bigint PRIMARY KEY, campaign_id int, status text NOT NULL,
                   contacted_at timestamptz, note text);
INSERT INTO t_$v SELECT i, i % 100, 'connected', now(), 'n' FROM generate_series(1, $rows) i;
SQL
done
bench_sql -q <<'SQL'
ALTER TABLE t_check ADD CONSTRAINT sent_needs_contact
    CHECK (status <> 'connection_request_sent' OR contacted_at IS NOT NULL),
  ADD CONSTRAINT contacted_status
    CHECK (contacted_at IS NULL OR status IN ('connection_request_sent','connected','messaging','replied','failed'));

CREATE TRIGGER noop BEFORE UPDATE ON t_noop FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
CREATE TRIGGER noop BEFORE UPDATE OF status, contacted_at ON t_noop_of
    FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();

-- The incident's trigger, as they wrote it (BEFORE UPDATE, all columns).
CREATE FUNCTION incident_rules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'connection_request_sent' AND NEW.contacted_at IS NULL THEN
        RAISE EXCEPTION 'status requires contacted_at';
    END IF;
    IF OLD.contacted_at IS NULL AND NEW.contacted_at IS NOT NULL
       AND NEW.status NOT IN ('connection_request_sent','connected','messaging','replied','failed') THEN
        RAISE EXCEPTION 'bad status for contact';
    END IF;
    IF OLD.contacted_at IS NOT NULL AND NEW.contacted_at IS NULL THEN
        RAISE EXCEPTION 'contacted_at cannot be cleared';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER incident BEFORE UPDATE ON t_plpgsql FOR EACH ROW EXECUTE FUNCTION incident_rules();

SELECT invariants.require_not_null('t_ours', 'contacted_at', 'status', ARRAY['connection_request_sent']);
SELECT invariants.require_on_set('t_ours', 'status', 'contacted_at',
         ARRAY['connection_request_sent','connected','messaging','replied','failed']);
SELECT invariants.write_once('t_ours', 'contacted_at');
SQL

declare -A rule_cols other_cols
statuses=(messaging replied)
for round in $(seq 1 "$rounds"); do
  status=${statuses[$((round % 2))]}
  n=${#variants[@]}
  for i in $(seq 0 $((n - 1))); do
    v=${variants[$(((i + round) % n))]}
    rule_cols[$v]+="$(time_ms "UPDATE t_$v SET status = '$status'" "t_$v") "
    other_cols[$v]+="$(time_ms "UPDATE t_$v SET note = 'r$round'" "t_$v") "
  done
  echo "round $round done"
done

over() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

# report STAT: the table and the ratios, each variant's rounds reduced by
# STAT (median_of, or min_of: on a shared machine noise only adds time).
report() {
  local stat=$1 v
  declare -A rc oc
  echo
  echo "== $rows-row UPDATE, $stat of $rounds rounds (ms)"
  printf '%-10s %16s %16s\n' variant "rule columns" "other columns"
  for v in "${variants[@]}"; do
    rc[$v]=$(echo "${rule_cols[$v]}" | $stat)
    oc[$v]=$(echo "${other_cols[$v]}" | $stat)
    printf '%-10s %16s %16s\n' "$v" "${rc[$v]}" "${oc[$v]}"
  done
  local ours_over plpgsql_over noop_over
  ours_over=$(over "${rc[ours]}" "${rc[none]}")
  plpgsql_over=$(over "${rc[plpgsql]}" "${rc[none]}")
  noop_over=$(over "${rc[noop]}" "${rc[none]}")
  echo "-- UPDATE of the rule columns (overhead = time - no trigger)"
  echo "ours overhead / PL/pgSQL overhead:        $(ratio "$ours_over" "$plpgsql_over")  (target <= 0.50)"
  echo "ours overhead / no-op C trigger overhead: $(ratio "$ours_over" "$noop_over")  (target <= 1.30)"
  echo "no-op C trigger OF rule columns overhead / PL/pgSQL overhead: $(ratio "$(over "${rc[noop_of]}" "${rc[none]}")" "$plpgsql_over")"
  echo "                                          (the floor of the first ratio for any BEFORE UPDATE OF trigger)"
  echo "-- UPDATE of other columns"
  echo "ours / no trigger:                        $(ratio "${oc[ours]}" "${oc[none]}")  (target <= 1.05)"
  echo "no-op C trigger OF rule columns / none:   $(ratio "${oc[noop_of]}" "${oc[none]}")  (Postgres fetches and locks the old row for"
  echo "                                          any BEFORE UPDATE row trigger before it reads the column list)"
  echo "PL/pgSQL / no trigger:                    $(ratio "${oc[plpgsql]}" "${oc[none]}")"
}
report median_of
report min_of
