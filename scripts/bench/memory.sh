#!/usr/bin/env bash
# Peak memory of backup and restore at two database sizes (issue 11, item 5c): a real PostgreSQL 15
# cluster of its own is loaded with the bed's mixed-entropy dataset (`../shared/bench/dataset.sql`,
# about 3x compressible with zstd) to about 1.8 GB, backed up and restored with pgvault while
# `/usr/bin/time -v` records the peak resident set size; then more of the same data is added (about
# 3.4 GB) and the same is measured again. Peak memory must not grow with the database size.
# pgvault runs at its default settings (the bed's configuration: zstd level 3, AES-256-GCM, the
# S3 server over TLS), against the bed's S3 server under its own repository prefix, with
# archive_command = pgvault-archive push (so the backup waits for its WAL, as in production).
#
# Usage (as root, from the project root, after ../shared/bench/setup.sh and a release build):
#   scripts/bench/memory.sh [runs]               default 1 backup + restore per size
# Environment:
#   PGVAULT_BIN   folder of pgvault and pgvault-archive (default target/release)
#   BENCH_DIR     the bed (default /tmp/pgvault-bench); this script works in $BENCH_DIR/memory
#   MEMORY_PORT   port of the script's own cluster (default 55445)
#   SIZES         the database sizes measured, GiB of base/ (default "1.8 3.4"); data is added with
#                 dataset.sql until base/ holds at least each size in turn
#   BACKUP_EXTRA  TOML lines for pgvault's [backup] section (default none: the defaults)
#   KEEP=1        leave the cluster (and the repository prefix) behind; a later run with KEEP=1
#                 reuses them (and loads only what is missing)
# Output: one line per run, then a table: size of base/, peak RSS (MB) of backup and restore,
# their wall time and CPU use ((user+sys)/wall: 2.0 = both cores busy).
# Disk: the cluster grows to about 3.5 GB plus WAL, and each restore needs as much again (removed
# after each run); the repository prefix holds about a third of that per backup.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
RUNS=${1:-1}
CDIR=$B/memory; CPORT=${MEMORY_PORT:-55445}; DATA=$CDIR/pg
SIZES=${SIZES:-1.8 3.4}
DATASET=${DATASET:-$here/../../../shared/bench/dataset.sql}
[ -f "$DATASET" ] || DATASET=/work/shared/bench/dataset.sql
[ -f "$DATASET" ] || { echo "dataset.sql of the bed not found (DATASET=path)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time (GNU time) is needed" >&2; exit 2; }

if [ "${KEEP:-0}" = 1 ] && [ -f "$DATA/PG_VERSION" ]; then
  log "reusing the cluster in $DATA (port $CPORT)"
  [ -f "$DATA/postmaster.pid" ] || as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$CDIR/pg.log" -w start >/dev/null
else
  log "fresh cluster in $DATA (port $CPORT), run $RUNID"
  make_cluster "$CDIR" "$CPORT"
  # keep pg_wal small while loading (make_cluster's 8GB suits the archive benchmarks)
  q -c "alter system set max_wal_size = '512MB'" -c "select pg_reload_conf()" >/dev/null
fi
tmp=$(mktemp -d)
cleanup() {
  rm -rf "$tmp" "$CDIR/restore"
  if [ "${KEEP:-0}" != 1 ]; then
    stop_cluster "$DATA"
    rm -rf "$CDIR"
  fi
}
trap cleanup EXIT

CONF=$CDIR/pgvault.toml
if [ ! -f "$CDIR/prefix" ]; then echo "memory-$RUNID" >"$CDIR/prefix"; fresh=1; else fresh=0; fi
write_pgvault_conf "$CONF" "$(cat "$CDIR/prefix")" "$DATA"
if [ -n "${BACKUP_EXTRA:-}" ]; then printf '\n[backup]\n%s\n' "$BACKUP_EXTRA" >>"$CONF"; fi
[ $fresh = 0 ] || as_pg "$bin/pgvault" --config "$CONF" init >/dev/null
PV_CMD="$bin/pgvault-archive --config $CONF push %p"

base_gib() { calc "$(du -sb "$DATA/base" | cut -f1) / 1073741824"; }

# grow_to GIB: adds dataset.sql rows until base/ holds at least GIB (one dataset.sql multiplier
# is about 1.9 GiB). The WAL of the load is discarded: the backups taken afterwards wait only for
# their own WAL.
grow_to() {
  local cur rows
  set_archive_command /bin/true
  while cur=$(base_gib); [ "$(calc "$cur < $1")" = 1 ]; do
    rows=$(calc "r = ($1 - $cur) / 1.9 + 0.02; if (r < 0.05) r = 0.05; r" | awk '{printf "%.2f", $1}')
    log "base/ holds $(printf '%.2f' "$cur") GiB: loading dataset.sql x$rows (takes minutes)"
    q -v rows="$rows" -f "$DATASET" >/dev/null
  done
  q -c checkpoint >/dev/null
  set_archive_command "$PV_CMD"
  q -c "select pg_switch_wal()" >/dev/null
}

# measure LABEL CMD...: runs CMD as postgres under GNU time; prints "rss_mb wall cpu" on stdout.
measure() {
  local label=$1; shift
  /usr/bin/time -v -o "$tmp/time" runuser -u postgres -- "$@" >"$tmp/out" 2>"$tmp/err" || {
    log "$label failed:"; cat "$tmp/err" >&2; return 1
  }
  awk -F': ' '
    /Maximum resident set size/ {rss=$2}
    /User time/ {u=$2} /System time/ {s=$2}
    /Elapsed \(wall clock\)/ {n=split($2,p,":"); w=0; for(i=1;i<=n;i++) w=w*60+p[i]}
    END {printf "%.1f %.2f %.2f\n", rss/1024, w, (u+s)/w}' "$tmp/time"
}

: >"$tmp/rows"
run_size() {
  local size i rss wall cpu id
  size=$(base_gib)
  for i in $(seq "$RUNS"); do
    read -r rss wall cpu < <(measure backup "$bin/pgvault" --config "$CONF" backup)
    printf 'size %.2f GB run %d backup   peak RSS %7.1f MB  %7.2f s  CPU %.2f\n' "$size" "$i" "$rss" "$wall" "$cpu"
    printf '%s backup %s %s %s\n' "$size" "$rss" "$wall" "$cpu" >>"$tmp/rows"
    rm -rf "$CDIR/restore"
    read -r rss wall cpu < <(measure restore "$bin/pgvault" --config "$CONF" restore --pgdata "$CDIR/restore")
    printf 'size %.2f GB run %d restore  peak RSS %7.1f MB  %7.2f s  CPU %.2f\n' "$size" "$i" "$rss" "$wall" "$cpu"
    printf '%s restore %s %s %s\n' "$size" "$rss" "$wall" "$cpu" >>"$tmp/rows"
    rm -rf "$CDIR/restore"
  done
  # keep the repository small: only the latest backup is needed (restore takes the latest)
  if [ "${KEEP:-0}" != 1 ]; then
    for id in $(as_pg "$bin/pgvault" --config "$CONF" list --json 2>/dev/null |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print("\n".join(b["id"] for b in d.get("backups", [])))' 2>/dev/null); do
      as_pg "$bin/pgvault" --config "$CONF" delete "$id" >/dev/null 2>&1 || log "could not delete backup $id"
    done
  fi
}

printf '# memory: %s run(s) per size, pgvault %s, [backup] %s\n' "$RUNS" "$("$bin/pgvault" --version 2>/dev/null | head -n1)" \
  "$(echo "${BACKUP_EXTRA:-defaults}" | tr '\n' ' ')"
printf '# load at start: %s\n' "$(uptime | sed 's/.*load average/load average/')"
for want in $SIZES; do
  grow_to "$want"
  run_size
done

printf '\n%-8s %-8s %14s %14s %10s\n' "GB" "command" "peak RSS (MB)" "wall (s)" "CPU"
sort -k2,2 -k1,1g "$tmp/rows" | awk '{k=$1" "$2; n[k]++; if ($3>r[k]) r[k]=$3; w[k]+=$4; c[k]+=$5; o[k]=NR}
  END {for (k in n) {split(k,p," "); printf "%-8.2f %-8s %14.1f %14.2f %10.2f\n", p[1], p[2], r[k], w[k]/n[k], c[k]/n[k]}}' | sort -k2,2 -k1,1g
printf '# (peak RSS: the largest of the runs; wall and CPU: their mean; CPU = (user+sys)/wall)\n'
