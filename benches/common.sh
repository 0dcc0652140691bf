# Shared by the benchmarks: a throwaway cluster with the release build.
# Each benchmark runs its alternatives side by side, interleaved, in one run,
# and prints ratios; nothing here asserts a time.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap" >/dev/null
. "$root/scripts/lib.sh"

bench_dir=/tmp/pg_invariants_bench
bench_port=28918

bench_start() {
  if [ "${SKIP_INSTALL:-}" != 1 ]; then
    cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
  fi
  # Less I/O noise: the benchmarks compare CPU work done per row.
  start_cluster "$bench_dir" "$bench_port" "shared_buffers = '1GB'" "max_wal_size = '8GB'" \
    "wal_level = minimal" "max_wal_senders = 0" "synchronous_commit = off" "full_page_writes = off" \
    "autovacuum = off" "$@"
  trap 'stop_cluster "$bench_dir"' EXIT
  bench_sql -q -c "CREATE EXTENSION pg_invariants" >/dev/null
  bench_sql -q <<'SQL'
CREATE FUNCTION bench_ms(stmt text) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE stmt;
    RETURN round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1);
END $$;
SQL
}

# The audit benchmarks' table: a bigint key, an int, three text and two
# timestamptz columns.
audit_columns="id bigint PRIMARY KEY, n int, a text, b text, c text, t1 timestamptz, t2 timestamptz"

# audit_log_bytes_per_row ROWS: the size of pg_invariants' log over ROWS.
audit_log_bytes_per_row() {
  bench_sql -tA -c "SELECT (pg_total_relation_size('invariants.audit_capture')
                            + pg_total_relation_size('invariants.audit_rows')) / $1"
}

bench_sql() { psql -X -h "$bench_dir" -p "$bench_port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# time_ms SQL [TABLE]: milliseconds taken by SQL, run after a VACUUM (of
# TABLE, or of everything) and a CHECKPOINT.
time_ms() {
  bench_sql -q -c "VACUUM ${2:-}" -c "CHECKPOINT" >/dev/null
  bench_sql -tA -c "SELECT bench_ms(\$bench\$$1\$bench\$)"
}

# median of the numbers on stdin (one per line or space-separated)
median_of() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# smallest of the numbers on stdin
min_of() { tr ' ' '\n' | grep -v '^$' | sort -g | head -1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b <= 0) print "n/a"; else printf "%.2f", a / b }'; }
