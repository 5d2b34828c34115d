#!/usr/bin/env bash
# Incremental backups (issue 12, Goals): on PostgreSQL 18 with the bed's S3 server, a ~1.8 GB
# database gets 1% of its rows updated in contiguous key ranges (runs of 100 rows), then an
# incremental backup is taken. Reports: the incremental's stored bytes and time against the full
# backup's (goals: <= 5% and <= 0.25); its stored bytes against a file-level incremental of the
# same change (every file whose manifest entry changed, copied whole; computed from the two
# backup_manifests: goal <= 0.3); and the time to restore a full plus 6 incrementals against the
# full alone (goal <= 1.3).
#
# Usage (as root, from the project root, after ../shared/bench/setup.sh and a release build):
#   PG18_BIN=/path/to/pg18/bin scripts/bench/incremental.sh [scale_rows]   default 9000000 rows (~1.8 GB)
# Environment: PGVAULT_BIN, BENCH_DIR as in lib.sh; INCR_PORT (default 55435); KEEP=1 keeps the cluster;
# RESTORE_PAIRS (default 3): interleaved full/chain restore pairs.
# Not part of the test command.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
PGBIN=${PG18_BIN:?set PG18_BIN to the bin folder of PostgreSQL 18}
ROWS=${1:-9000000}
CDIR=$B/incremental; CPORT=${INCR_PORT:-55435}; DATA=$CDIR/pg
make_cluster "$CDIR" "$CPORT"
cleanup() { [ "${KEEP:-0}" = 1 ] || stop_cluster "$DATA"; }
trap cleanup EXIT
write_pgvault_conf "$CDIR/pgvault.toml" "incremental-$RUNID" "$DATA"
PV="$bin/pgvault --config $CDIR/pgvault.toml"
as_pg $PV init >/dev/null
q -c "ALTER SYSTEM SET summarize_wal = on" -c "ALTER SYSTEM SET archive_command = '$bin/pgvault-archive --config $CDIR/pgvault.toml push %p'" -c "SELECT pg_reload_conf()" >/dev/null
log "loading $ROWS rows"
q -c "CREATE TABLE t (id bigint PRIMARY KEY, v int, pad text)" \
  -c "INSERT INTO t SELECT g, 0, repeat('x', 150) FROM generate_series(1, $ROWS) g" >/dev/null
# A freshly loaded table has no hint bits yet: the first scan after the load sets them on every
# page and, with data checksums on, WAL-logs each page (so every block counts as changed). A
# database in service is long past that point: freeze it first, as its autovacuum would have.
q -c "VACUUM (FREEZE, ANALYZE) t" -c "CHECKPOINT" >/dev/null
log "database size $(q -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"

field() { as_pg $PV list --json | python3 -c "import json,sys; b=[x for x in json.load(sys.stdin)['backups'] if x['id']=='$1'][0]; print(b['$2'])"; }
stored() { field "$1" stored_size; }
backup() { # TYPE -> prints "id seconds"
  local t0 t1 id; t0=$(now); id=$(as_pg $PV backup --type "$1" | awk '{print $2}'); t1=$(now)
  echo "$id $(calc "$t1 - $t0")"
}
update_1pct() { # runs of 100 consecutive rows, one every 10000 rows (1%), shifted each time
  local shift=$(( (RANDOM % 100) * 100 ))
  q -c "UPDATE t SET v = v + 1 WHERE (id + $shift) % 10000 < 100" >/dev/null
}

read -r full tfull < <(backup full)
update_1pct
read -r inc tinc < <(backup incr)
sfull=$(stored "$full"); sinc=$(stored "$inc")
log "full $full: $sfull bytes in ${tfull}s; incr $inc: $sinc bytes in ${tinc}s"
echo "stored ratio incr/full: $(calc "$sinc / $sfull") (goal <= 0.05)"
echo "time ratio incr/full:   $(calc "$tinc / $tfull") (goal <= 0.25)"

# File-level incremental of the same change: the full sizes of the files whose manifest
# entries differ between the two backups (pgBackRest's incremental copies those whole).
mdir=$CDIR/manifests; mkdir -p "$mdir"; chown postgres "$mdir"
for id in "$full" "$inc"; do
  as_pg $PV restore --pgdata "$mdir/$id" --backup "$id" --target-immediate >/dev/null
done
filelevel=$(python3 - "$mdir/$full/backup_manifest" "$mdir/$inc/backup_manifest" <<'PY'
import json, sys
a = {f["Path"]: f for f in json.load(open(sys.argv[1]))["Files"]}
b = {f["Path"]: f for f in json.load(open(sys.argv[2]))["Files"]}
print(sum(f["Size"] for p, f in b.items() if p not in a or a[p].get("Checksum") != f.get("Checksum")))
PY
)
# The file-level incremental would be compressed too: estimate its stored size with the full
# backup's own compression ratio (stored / cluster size), so both sides are compared compressed.
sizefull=$(field "$full" size)
filestored=$(calc "$filelevel * $sfull / $sizefull")
echo "file-level incremental: $filelevel bytes of changed files, about $filestored stored at the full's ratio"
echo "stored ratio incr/file-level: $(calc "$sinc / $filestored") (goal <= 0.3)"

# Restore: the full alone, then a chain of a full and 6 incrementals.
restore_time() { local d=$CDIR/r-$1 t0 t1; rm -rf "$d"; t0=$(now); as_pg $PV restore --pgdata "$d" --backup "$1" --target-immediate >/dev/null; t1=$(now); rm -rf "$d"; calc "$t1 - $t0"; }
last=$inc
for _ in 1 2 3 4 5; do update_1pct; read -r last _ < <(backup incr); done
# Interleaved pairs (full, then chain), RESTORE_PAIRS of them: the median of the per-pair ratios,
# so that load from elsewhere on the machine hits both sides of a pair alike.
ratios=()
for _ in $(seq "${RESTORE_PAIRS:-3}"); do
  rfull=$(restore_time "$full"); rchain=$(restore_time "$last")
  r=$(calc "$rchain / $rfull"); ratios+=("$r")
  echo "restore full ${rfull}s, full+6 incr ${rchain}s: ratio $r"
done
echo "restore ratio, median of ${#ratios[@]} pairs: $(printf '%s\n' "${ratios[@]}" | median) (goal <= 1.3)"
