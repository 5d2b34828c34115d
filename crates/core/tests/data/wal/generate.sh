#!/bin/bash
# Regenerates the real WAL segments under this directory (see README.md). Run as root:
#   generate.sh /usr/lib/postgresql/15/bin pg15 54931
# It makes a throw-away cluster with 1 MiB segments under /tmp, runs a fixed workload, and copies
# a few archived segments plus pg_waldump's view of them (TZ=UTC) into ./<tag>/.
set -euo pipefail
BIN=$1 TAG=$2 PORT=$3
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d /tmp/walscan-gen-$TAG.XXXXXX)
chown postgres "$W"
pg() { runuser -u postgres -- env TZ=UTC "$@"; }
sql() { pg "$BIN/psql" -X -q -h "$W" -p "$1" -d postgres -v ON_ERROR_STOP=1 -c "$2"; }
pg mkdir "$W/archive" "$W/archive2"
pg "$BIN/initdb" -D "$W/a" --wal-segsize=1 -A trust -U postgres >/dev/null
cat >>"$W/a/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$W'
archive_mode = on
archive_command = 'cp %p $W/archive/%f'
wal_level = replica
timezone = 'UTC'
log_timezone = 'UTC'
CONF
pg "$BIN/pg_ctl" -D "$W/a" -l "$W/a.log" -w start >/dev/null
sql $PORT "select pg_switch_wal()" >/dev/null
# Segment "commits": a few commits, an abort, a restore point, more commits, then a switch.
sql $PORT "create table t(i int, s text)"
for i in 1 2 3; do sql $PORT "insert into t values ($i, 'row $i')"; done
sql $PORT "begin; insert into t values (-1, 'aborted'); rollback"
sql $PORT "select pg_create_restore_point('before_x')" >/dev/null
for i in 4 5; do sql $PORT "insert into t values ($i, 'row $i')"; done
sql $PORT "select pg_switch_wal()" >/dev/null
# Segments "fill": large uncompressed rows fill whole segments, so records cross page and
# segment boundaries (a continuation record at the start of the next segment).
sql $PORT "create table big(i int, s text); alter table big alter column s set storage external"
sql $PORT "insert into big select g, repeat('x', 3000) from generate_series(1, 700) g"
sql $PORT "select pg_create_restore_point('after_big')" >/dev/null
sql $PORT "select pg_switch_wal()" >/dev/null
# A promoted standby: the first segment of timeline 2 starts with timeline 1's pages.
pg "$BIN/pg_basebackup" -h "$W" -p $PORT -D "$W/b" -R -X stream -c fast
sed -i "s/^port = .*/port = $((PORT + 1))/; s#archive/%f#archive2/%f#" "$W/b/postgresql.conf"
pg "$BIN/pg_ctl" -D "$W/b" -l "$W/b.log" -w start >/dev/null
sql $PORT "insert into t values (6, 'row 6')"
sleep 1
pg "$BIN/pg_ctl" -D "$W/b" -w promote >/dev/null
sql $((PORT + 1)) "insert into t values (7, 'row 7 on timeline 2')"
sql $((PORT + 1)) "select pg_switch_wal()" >/dev/null
sleep 2
pg "$BIN/pg_ctl" -D "$W/b" -w stop >/dev/null
pg "$BIN/pg_ctl" -D "$W/a" -w stop >/dev/null
ls -la "$W/archive" "$W/archive2"
echo "work dir: $W"
