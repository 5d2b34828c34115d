#!/usr/bin/env bash
# Archiver throughput (issue 11, item 5a): a real PostgreSQL 15 cluster builds a backlog of ready
# WAL segments while archiving is paused (archive_command = /bin/false), then archiving resumes
# with the tool's archive_command and the time until the last `.ready` became `.done` is taken.
# pgvault (batch push on) against pgBackRest with archive-async, as A/B pairs (the order
# alternates from pair to pair), on the shared bench bed's S3 server with the bed's settings.
# Optionally (BURST_SECONDS > 0) also the archiver's lag during a live write burst: the number of
# `.ready` segments waiting, sampled every 0.5 s while pgbench writes.
#
# Usage (as root, from the project root, after ../shared/bench/setup.sh and a release build):
#   scripts/bench/archive_backlog.sh [pairs] [segments]        default 5 pairs of 32 segments (512 MiB)
# Environment:
#   PGVAULT_BIN      folder of pgvault and pgvault-archive (default target/release)
#   BENCH_DIR        the bed (default /tmp/pgvault-bench); this script works in $BENCH_DIR/backlog
#   BACKLOG_PORT     port of the script's own cluster (default 55433)
#   ARCHIVE_EXTRA    TOML lines for pgvault's [archive] section (default "push_batch = 16\npush_parallel = 4",
#                    the defaults, written out so the report says what ran)
#   BURST_SECONDS    length of the live write burst per tool (default 0: not measured)
#   KEEP=1           leave the cluster running afterwards
# Output: one line per drain, then the medians: segments/s for each tool, the ratio
# pgvault/pgBackRest of segments/s per pair (above 1.0: pgvault drains faster) with min-max.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ARCHIVE_EXTRA=${ARCHIVE_EXTRA:-$'push_batch = 16\npush_parallel = 4'}
# shellcheck source=lib.sh
. "$here/lib.sh"
PAIRS=${1:-5}; SEGS=${2:-32}
CDIR=$B/backlog; CPORT=${BACKLOG_PORT:-55433}; DATA=$CDIR/pg
BURST=${BURST_SECONDS:-0}

log "fresh cluster in $DATA (port $CPORT), run $RUNID"
make_cluster "$CDIR" "$CPORT"
cleanup() { [ "${KEEP:-0}" = 1 ] || stop_cluster "$DATA"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; cleanup' EXIT

write_pgvault_conf "$CDIR/pgvault.toml" "backlog-$RUNID" "$DATA"
write_pgbr_conf "$CDIR/pgbackrest.conf" "backlog-$RUNID" "$DATA" "archive-async=y"
as_pg "$bin/pgvault" --config "$CDIR/pgvault.toml" init >/dev/null
as_pg pgbackrest --config="$CDIR/pgbackrest.conf" --stanza=main stanza-create >/dev/null
PV_CMD="$bin/pgvault-archive --config $CDIR/pgvault.toml push %p"
BR_CMD="pgbackrest --config=$CDIR/pgbackrest.conf --stanza=main archive-push %p"

# drain TOOL CMD: one measurement; prints "segments seconds" on stdout.
drain() {
  local tool=$1 cmd=$2 n t0 t1 failed0 failed1 archived0 archived1
  set_archive_command /bin/false
  # the previous drain's segments are archived: let a checkpoint recycle them
  q -c checkpoint >/dev/null
  write_wal $((SEGS * SEG))
  sleep 4 # the last .ready is written by the switch; the archiver gives up after 3 failures 1 s apart and waits
  n=$(ready_count "$DATA")
  read -r failed0 archived0 < <(q -F ' ' -c "select failed_count, archived_count from pg_stat_archiver")
  t0=$(now)
  set_archive_command "$cmd"
  while [ "$(ready_count "$DATA")" -gt 0 ]; do
    sleep 0.05
    if [ "$(calc "$(now) - $t0 > 900")" = 1 ]; then log "$tool: backlog not drained after 900 s"; return 1; fi
  done
  t1=$(now)
  read -r failed1 archived1 < <(q -F ' ' -c "select failed_count, archived_count from pg_stat_archiver")
  # failures of /bin/false before the reload may still be counted once: tolerate one
  if [ $((failed1 - failed0)) -gt 1 ]; then log "$tool: $((failed1 - failed0)) archive_command failures during the drain"; fi
  [ $((archived1 - archived0)) = "$n" ] || log "$tool: $n ready segments, but pg_stat_archiver counted $((archived1 - archived0))"
  [ "$n" -gt 0 ] || { log "$tool: no backlog was built"; return 1; }
  printf '%s %s\n' "$n" "$(calc "$t1 - $t0")"
}

: >"$tmp/pv"; : >"$tmp/br"; : >"$tmp/ratio"
printf '# archive_backlog: %s pairs, backlog of %s segments (%s MiB), pgvault [archive] %s, pgBackRest archive-async (process-max %s)\n' \
  "$PAIRS" "$SEGS" "$((SEGS * 16))" "$(echo "$ARCHIVE_EXTRA" | tr '\n' ' ')" "$(sed -n 's/^process-max=//p' "$CDIR/pgbackrest.conf")"
printf '# load at start: %s\n' "$(uptime | sed 's/.*load average/load average/')"
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then order="pv br"; else order="br pv"; fi
  for tool in $order; do
    n=; s=
    if [ "$tool" = pv ]; then read -r n s < <(drain pgvault "$PV_CMD"); else read -r n s < <(drain pgBackRest "$BR_CMD"); fi
    [ -n "$s" ] || { log "drain failed: stopping"; exit 1; }
    rate=$(calc "$n / $s")
    echo "$rate" >>"$tmp/$tool"
    eval "rate_$tool=$rate"
    printf 'pair %d %-10s %3d segments in %6.2f s  %6.2f segments/s\n' "$i" "$([ "$tool" = pv ] && echo pgvault || echo pgBackRest)" "$n" "$s" "$rate"
  done
  calc "$rate_pv / $rate_br" >>"$tmp/ratio"
done
[ "$PAIRS" -gt 0 ] && printf 'drain of a %d-segment backlog: pgBackRest async %6.2f seg/s   pgvault %6.2f seg/s   ratio (pgvault/pgBackRest, per pair) median %.2f, spread %s\n' \
  "$SEGS" "$(median <"$tmp/br")" "$(median <"$tmp/pv")" "$(median <"$tmp/ratio")" "$(minmax <"$tmp/ratio")"

if [ "$BURST" -gt 0 ]; then
  # Live burst: archiving on, pgbench writes for BURST seconds; the number of ready segments
  # waiting is sampled every 0.5 s, until the backlog is empty again.
  cat >"$CDIR/burst.sql" <<'EOF'
insert into burn select g, md5(g::text), md5(random()::text) from generate_series(1, 5000) g;
EOF
  chown postgres "$CDIR/burst.sql"
  for tool in pv br; do
    set_archive_command "$([ $tool = pv ] && echo "$PV_CMD" || echo "$BR_CMD")"
    q -c "create table if not exists burn (id bigint, a text, b text)" -c "truncate burn" -c checkpoint >/dev/null
    l0=$(q -c "select pg_current_wal_lsn()")
    : >"$tmp/lag"
    as_pg "$PGBIN/pgbench" -n -T "$BURST" -c 2 -j 2 -h "$CDIR" -p "$CPORT" -U postgres -f "$CDIR/burst.sql" postgres >/dev/null 2>&1 &
    bp=$!
    while kill -0 "$bp" 2>/dev/null; do ready_count "$DATA" >>"$tmp/lag"; sleep 0.5; done
    wait "$bp" || true
    written=$(q -c "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$l0')::bigint / $SEG")
    t0=$(now)
    while [ "$(ready_count "$DATA")" -gt 0 ]; do sleep 0.1; done
    printf 'burst %ss %-10s %d segments written; ready segments waiting: median %s, max %s; %.1f s to catch up after the burst\n' \
      "$BURST" "$([ $tool = pv ] && echo pgvault || echo pgBackRest)" "$written" "$(median <"$tmp/lag")" \
      "$(sort -g "$tmp/lag" | tail -n1)" "$(calc "$(now) - $t0")"
  done
fi
