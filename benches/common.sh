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
  start_cluster "$bench_dir" "$bench_port" "shared_buffers = '512MB'" "max_wal_size = '4GB'" "$@"
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

bench_sql() { psql -X -h "$bench_dir" -p "$bench_port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# time_ms SQL: milliseconds taken by SQL, run after a VACUUM of every table.
time_ms() {
  bench_sql -q -c "VACUUM" >/dev/null
  bench_sql -tA -c "SELECT bench_ms(\$bench\$$1\$bench\$)"
}

# min of the numbers on stdin
min_of() { sort -g | head -n 1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b <= 0) print "n/a"; else printf "%.2f", a / b }'; }
