# Shared helpers of the benchmark scripts in scripts/bench/ (sourced, not run).
#
# They run on the shared benchmark bed (`../shared/bench/setup.sh`: PostgreSQL 15 binaries, the
# SeaweedFS S3 server over TLS at https://127.0.0.1:8443, pgBackRest, `$BENCH_DIR/pgvault.toml`
# and `$BENCH_DIR/pgbackrest.conf`). Each script makes its own small PostgreSQL 15 cluster under
# `$BENCH_DIR/<name>/` on its own port, so the bed's cluster (port 55432) is never reconfigured,
# and derives its pgvault and pgBackRest configurations from the bed's two files (same S3 server,
# zstd level 3, encryption, pgBackRest process-max) with a fresh repository prefix per run.
# Run as root (PostgreSQL runs as the `postgres` OS user, as on the bed).

B=${BENCH_DIR:-/tmp/pgvault-bench}
if [ ! -f "$B/env.sh" ] || [ ! -f "$B/pgvault.toml" ] || [ ! -f "$B/pgbackrest.conf" ]; then
  echo "the benchmark bed is not set up under $B: run ../shared/bench/setup.sh first" >&2
  exit 2
fi
# shellcheck disable=SC1091
. "$B/env.sh" # B, PORT (the bed's), PGBIN, WEED
[ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL runs as the postgres user)" >&2; exit 2; }
curl -sk -o /dev/null https://127.0.0.1:8443/ || { echo "the bed's S3 server is down: run setup.sh" >&2; exit 2; }

SEG=$((16 * 1024 * 1024))
RUNID=${RUNID:-$(date +%Y%m%d%H%M%S)-$$}

bin=$(cd "${PGVAULT_BIN:-target/release}" 2>/dev/null && pwd || true)
if [ -z "$bin" ] || [ ! -x "$bin/pgvault" ] || [ ! -x "$bin/pgvault-archive" ]; then
  echo "pgvault binaries not found under ${PGVAULT_BIN:-target/release} (cargo build --release --bins, or PGVAULT_BIN=dir)" >&2
  exit 2
fi

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
as_pg() { runuser -u postgres -- "$@"; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
minmax() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.2f-%.2f", lo, hi}'; }
calc() { echo "$*" | bc -l; }

# make_cluster DIR PORT: a fresh PostgreSQL 15 cluster (checksums on), archiving to /bin/false
# (paused), socket in DIR, started. Removes anything at DIR first.
make_cluster() {
  local dir=$1 port=$2
  stop_cluster "$dir/pg"
  rm -rf "$dir"; mkdir -p "$dir"; chown postgres "$dir"
  as_pg "$PGBIN/initdb" -D "$dir/pg" -k -A trust -U postgres >/dev/null
  cat >>"$dir/pg/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
wal_level = replica
archive_mode = on
archive_command = '/bin/false'
max_wal_senders = 10
shared_buffers = 256MB
max_wal_size = 8GB
checkpoint_timeout = 1h
logging_collector = off
EOF
  as_pg "$PGBIN/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w start >/dev/null
}

stop_cluster() { # DATADIR
  if [ -f "$1/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true; fi
}

# psql against the cluster at socket dir $CDIR, port $CPORT
q() { PGOPTIONS="-c client_min_messages=warning" command psql -h "$CDIR" -p "$CPORT" -U postgres -X -q -At "$@"; }

# pgvault configuration for the cluster: the bed's file with another repository prefix and the
# cluster's connection; ARCHIVE_EXTRA (TOML lines) is appended as an [archive] section.
write_pgvault_conf() { # FILE PREFIX DATADIR
  sed -e "s#^url = .*#url = \"s3://pgvault/$2\"#" -e "s#^host = .*#host = \"$CDIR\"#" \
    -e "s#^port = .*#port = $CPORT#" -e "s#^pgdata = .*#pgdata = \"$3\"#" "$B/pgvault.toml" >"$1"
  if [ -n "${ARCHIVE_EXTRA:-}" ]; then printf '\n[archive]\n%s\n' "$ARCHIVE_EXTRA" >>"$1"; fi
  chown postgres "$1"; chmod 600 "$1"
}

# pgBackRest configuration for the cluster: the bed's file with another repository path, the
# cluster's data directory, port and socket, and its own spool and lock folders; extra
# `key=value` lines (e.g. archive-async=y) go into [global].
write_pgbr_conf() { # FILE REPO_PATH DATADIR [extra lines...]
  local f=$1 repo=$2 data=$3; shift 3
  mkdir -p "$CDIR/pgbr-spool" "$CDIR/pgbr-log"; chown postgres "$CDIR/pgbr-spool" "$CDIR/pgbr-log"
  sed -e "s#^repo1-path=.*#repo1-path=/$repo#" -e "s#^pg1-path=.*#pg1-path=$data#" \
    -e "s#^pg1-port=.*#pg1-port=$CPORT#" -e "s#^pg1-socket-path=.*#pg1-socket-path=$CDIR#" \
    -e "s#^spool-path=.*#spool-path=$CDIR/pgbr-spool#" -e "s#^lock-path=.*#lock-path=$CDIR/pgbr-spool#" \
    -e "s#^log-path=.*#log-path=$CDIR/pgbr-log#" "$B/pgbackrest.conf" >"$f"
  local extra
  for extra in "$@"; do sed -i "/^\[global\]/a $extra" "$f"; done
  chown postgres "$f"
}

# set_archive_command CMD: ALTER SYSTEM + reload (the archiver wakes on the reload).
set_archive_command() {
  q -c "alter system set archive_command = '$1'" -c "select pg_reload_conf()" >/dev/null
}

ready_count() { # DATADIR
  find "$1/pg_wal/archive_status" -maxdepth 1 -name '*.ready' 2>/dev/null | wc -l
}

# write_wal BYTES: inserts rows of mixed entropy (a counter and two md5 texts: about 2x
# compressible with zstd, like the bed's update fixture) until the cluster has written BYTES of
# WAL, then switches to a new segment so the last one is complete.
write_wal() {
  local want=$1 start
  q -c "create table if not exists burn (id bigint, a text, b text)" >/dev/null
  q -c "truncate burn" >/dev/null
  start=$(q -c "select pg_current_wal_lsn()")
  while [ "$(q -c "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$start')::bigint >= $want")" = f ]; do
    q -c "insert into burn select g, md5(g::text), md5(random()::text) from generate_series(1, 100000) g" >/dev/null
  done
  q -c "select pg_switch_wal()" >/dev/null
}
