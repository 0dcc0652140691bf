# Shared by scripts/test and scripts/demo: start and stop throwaway clusters.
PG_MAJOR=15
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
PG_CONFIG="$PG_BIN/pg_config"
export PATH="$HOME/.cargo/bin:$PATH"

as_postgres() { runuser -u postgres -- "$@"; }

# start_cluster DIR PORT [postgresql.conf lines...]: a fresh cluster in DIR,
# listening on 127.0.0.1:PORT and on a socket in DIR. An older cluster left in
# DIR by an earlier run is stopped and removed first.
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
