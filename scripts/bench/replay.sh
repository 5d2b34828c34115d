#!/usr/bin/env bash
# Replay time (issue 11, item 5b): a restore that needs many archived WAL segments, from the
# restore command's start to a promoted server, pgvault (prefetching fetch on) against pgBackRest
# with asynchronous archive-get, as A/B pairs (the order alternates from pair to pair).
#
# A fresh PostgreSQL 15 cluster archives into both repositories at once (archive_command runs
# `pgvault-archive push` then pgBackRest's synchronous `archive-push`); each tool takes a full
# backup of it (small: the replay dominates), then the cluster writes SEGMENTS segments of WAL and
# a marker row, and switches. Each measurement restores the tool's backup into a new directory
# (archive_mode off, recovery to the end of the archive, promote), starts PostgreSQL on another
# port, waits until `pg_is_in_recovery()` is false, and checks that the marker row is there.
#
# Usage (as root, from the project root, after ../shared/bench/setup.sh and a release build):
#   scripts/bench/replay.sh [pairs] [segments]       default 5 pairs, 128 segments (2 GiB of WAL)
# Environment:
#   PGVAULT_BIN    folder of pgvault and pgvault-archive (default target/release)
#   BENCH_DIR      the bed (default /tmp/pgvault-bench); works in $BENCH_DIR/replay
#   REPLAY_PORT    port of the source cluster (default 55434); restored clusters use it + 1
#   ARCHIVE_EXTRA  TOML lines for pgvault's [archive] section (default "get_prefetch = 8\nget_parallel = 4",
#                  the defaults; pgBackRest's archive-get-queue-max default of 128 MiB is 8 segments too)
#   KEEP=1         leave the source cluster running afterwards
#   REUSE=1        measure again against the repositories an earlier run left (no new WAL; the
#                  source cluster is not needed)
#   FLOOR=1        also measure PostgreSQL's own replay with every segment already in pg_wal (no
#                  restore_command at all): the floor any restore_command can reach
# Output: per measurement the restore, replay (start to promoted) and total seconds; then the
# medians and the ratio pgvault/pgBackRest per pair (below 1.0: pgvault is faster), min-max; with
# FLOOR=1 the floor's median and each tool's replay over it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ARCHIVE_EXTRA=${ARCHIVE_EXTRA:-$'get_prefetch = 8\nget_parallel = 4'}
# shellcheck source=lib.sh
. "$here/lib.sh"
PAIRS=${1:-5}; SEGS=${2:-128}
CDIR=$B/replay; CPORT=${REPLAY_PORT:-55434}; DATA=$CDIR/pg; RPORT=$((CPORT + 1))

cleanup() {
  stop_cluster "$CDIR/r-pv"; stop_cluster "$CDIR/r-br"
  rm -rf "$CDIR/r-pv" "$CDIR/r-br"
  [ "${KEEP:-0}" = 1 ] || stop_cluster "$DATA"
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; cleanup' EXIT

if [ "${REUSE:-0}" = 1 ] && [ -f "$CDIR/runid" ]; then
  RUNID=$(cat "$CDIR/runid")
  log "reusing the cluster and repositories of run $RUNID"
else
  log "fresh cluster in $DATA (port $CPORT), run $RUNID"
  make_cluster "$CDIR" "$CPORT"
  write_pgvault_conf "$CDIR/pgvault.toml" "replay-$RUNID" "$DATA"
  write_pgbr_conf "$CDIR/pgbackrest.conf" "replay-$RUNID" "$DATA"
  # the restores' configuration: asynchronous archive-get into the spool, the restored directory
  write_pgbr_conf "$CDIR/pgbackrest-restore.conf" "replay-$RUNID" "$CDIR/r-br" "archive-async=y"
  as_pg "$bin/pgvault" --config "$CDIR/pgvault.toml" init >/dev/null
  as_pg pgbackrest --config="$CDIR/pgbackrest.conf" --stanza=main stanza-create >/dev/null
  set_archive_command "$bin/pgvault-archive --config $CDIR/pgvault.toml push %p && pgbackrest --config=$CDIR/pgbackrest.conf --stanza=main archive-push %p"
  q -c "create table marker (tag text)" -c "create table burn (id bigint, a text, b text)" >/dev/null

  log "full backups (pgBackRest, then pgvault)"
  as_pg pgbackrest --config="$CDIR/pgbackrest.conf" --stanza=main --type=full backup >/dev/null
  as_pg "$bin/pgvault" --config "$CDIR/pgvault.toml" backup >/dev/null
  log "writing $SEGS segments of WAL"
  write_wal $((SEGS * SEG))
  q -c "insert into marker values ('end-$RUNID')" -c "select pg_switch_wal()" >/dev/null
  log "waiting for the archive to catch up"
  while [ "$(ready_count "$DATA")" -gt 0 ]; do sleep 1; done
  log "archived: $(q -c "select archived_count, last_archived_wal from pg_stat_archiver")"

  echo "$RUNID" >"$CDIR/runid"
fi
# start_and_wait DIR: starts the restored cluster on RPORT, prints seconds until promoted.
start_and_wait() {
  local dir=$1 t0 rec
  cat >>"$dir/postgresql.auto.conf" <<EOF
port = $RPORT
unix_socket_directories = '$CDIR'
listen_addresses = ''
EOF
  chown postgres "$dir/postgresql.auto.conf"
  t0=$(now)
  as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$dir.log" start >/dev/null
  while :; do
    rec=$(command psql -h "$CDIR" -p "$RPORT" -U postgres -X -q -At -c "select pg_is_in_recovery()" 2>/dev/null || true)
    [ "$rec" = f ] && break
    if ! as_pg "$PGBIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then log "restored cluster $dir stopped: see $dir.log"; return 1; fi
    sleep 0.1
  done
  calc "$(now) - $t0"
  [ "$(command psql -h "$CDIR" -p "$RPORT" -U postgres -X -q -At -c "select count(*) from marker where tag = 'end-$RUNID'")" = 1 ] ||
    { log "$dir: the marker row is missing: recovery stopped early"; return 1; }
}

# fill_walcache: every archived segment after the backup, fetched once into $CDIR/walcache.
fill_walcache() {
  local n found=0 name
  [ -f "$CDIR/walcache/.done-$RUNID" ] && return 0
  rm -rf "$CDIR/walcache"; mkdir -p "$CDIR/walcache"; chown postgres "$CDIR/walcache"
  for n in $(seq 1 4096); do
    name=$(printf '00000001%08X%08X' $(((n) / 256)) $(((n) % 256)))
    if as_pg "$bin/pgvault-archive" --config "$CDIR/pgvault.toml" fetch "$name" "$CDIR/walcache/$name" >/dev/null 2>&1; then
      found=$((found + 1))
    elif [ "$found" -gt 0 ]; then break; fi
  done
  log "floor: $found segments in $CDIR/walcache"
  touch "$CDIR/walcache/.done-$RUNID"
}

# measure TOOL: restore + start to promoted; prints "restore_s replay_s total_s". TOOL "floor":
# pgvault's restore, then every segment copied into pg_wal and no restore_command.
measure() {
  local tool=$1 dir t0 t1 rp
  dir=$CDIR/r-$tool
  stop_cluster "$dir"; rm -rf "$dir" "$dir.log"
  t0=$(now)
  if [ "$tool" = floor ]; then
    as_pg "$bin/pgvault" --config "$CDIR/pgvault.toml" restore --pgdata "$dir" --archive-mode off >/dev/null
    as_pg cp "$CDIR"/walcache/0* "$dir/pg_wal/"
    echo "restore_command = 'false'" >>"$dir/postgresql.auto.conf"
    sync
  elif [ "$tool" = pv ]; then
    as_pg "$bin/pgvault" --config "$CDIR/pgvault.toml" restore --pgdata "$dir" --archive-mode off >/dev/null
  else
    rm -rf "$CDIR/pgbr-spool/archive" # no segments left from the previous measurement
    as_pg pgbackrest --config="$CDIR/pgbackrest-restore.conf" --stanza=main --archive-mode=off \
      "--recovery-option=restore_command=pgbackrest --config=$CDIR/pgbackrest-restore.conf --stanza=main archive-get %f \"%p\"" \
      restore >/dev/null
  fi
  t1=$(now)
  rp=$(start_and_wait "$dir") || return 1
  stop_cluster "$dir"
  printf '%s %s %s\n' "$(calc "$t1 - $t0")" "$rp" "$(calc "$t1 - $t0 + $rp")"
}

: >"$tmp/pv"; : >"$tmp/br"; : >"$tmp/floor"; : >"$tmp/pv.total"; : >"$tmp/br.total"; : >"$tmp/ratio"; : >"$tmp/ratio.total"
tools="pv br"
if [ "${FLOOR:-0}" = 1 ]; then fill_walcache; tools="pv br floor"; fi
printf '# replay: %s pairs, %s segments (%s MiB) of WAL after the backup, pgvault [archive] %s, pgBackRest archive-async archive-get (queue max default)\n' \
  "$PAIRS" "$SEGS" "$((SEGS * 16))" "$(echo "$ARCHIVE_EXTRA" | tr '\n' ' ')"
printf '# load at start: %s\n' "$(uptime | sed 's/.*load average/load average/')"
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then order=$tools; else order=$(echo "$tools" | awk '{for (i = NF; i > 0; i--) printf "%s ", $i}'); fi
  for tool in $order; do
    r=; rp=; tot=
    read -r r rp tot < <(measure "$tool") || true
    [ -n "$tot" ] || { log "measurement failed: stopping"; exit 1; }
    echo "$rp" >>"$tmp/$tool"; echo "$tot" >>"$tmp/$tool.total"
    eval "rp_$tool=$rp tot_$tool=$tot"
    printf 'pair %d %-10s restore %6.2f s  start to promoted %6.2f s  total %6.2f s\n' "$i" \
      "$(case $tool in pv) echo pgvault;; br) echo pgBackRest;; *) echo floor;; esac)" "$r" "$rp" "$tot"
  done
  calc "$rp_pv / $rp_br" >>"$tmp/ratio"; calc "$tot_pv / $tot_br" >>"$tmp/ratio.total"
done
printf 'replay %d segments, start to promoted: pgBackRest %6.2f s  pgvault %6.2f s  ratio median %.2f, spread %s\n' \
  "$SEGS" "$(median <"$tmp/br")" "$(median <"$tmp/pv")" "$(median <"$tmp/ratio")" "$(minmax <"$tmp/ratio")"
printf 'restore + replay %d segments:          pgBackRest %6.2f s  pgvault %6.2f s  ratio median %.2f, spread %s\n' \
  "$SEGS" "$(median <"$tmp/br.total")" "$(median <"$tmp/pv.total")" "$(median <"$tmp/ratio.total")" "$(minmax <"$tmp/ratio.total")"
if [ "${FLOOR:-0}" = 1 ]; then
  printf 'floor (every segment already in pg_wal, no restore_command): %6.2f s; replay over floor: pgBackRest %.2f, pgvault %.2f\n' \
    "$(median <"$tmp/floor")" "$(calc "$(median <"$tmp/br") / $(median <"$tmp/floor")")" "$(calc "$(median <"$tmp/pv") / $(median <"$tmp/floor")")"
fi
