#!/usr/bin/env bash
# The main job, end to end, on a fresh machine: a demo PostgreSQL 15 cluster archives its WAL
# with pgvault-archive into a local, encrypted repository; pgvault backs it up; rows are written
# before and after a chosen moment; pgvault restores to that moment into a new directory; the
# restored cluster is started and must hold exactly the rows from before the moment.
#
#   bash scripts/demo.sh            (as root: PostgreSQL runs as the postgres OS user)
#   DEMO_DIR=/tmp/x DEMO_PORT=5499 bash scripts/demo.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
D=${DEMO_DIR:-/tmp/pgvault-demo}
PORT=${DEMO_PORT:-54390}
RPORT=$((PORT + 1))
PGBIN=/usr/lib/postgresql/15/bin
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
as_pg() { runuser -u postgres -- "$@"; }

say "installing what the demo needs (PostgreSQL 15, Rust build)"
if [ ! -x "$PGBIN/postgres" ] || ! command -v runuser >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-contrib-15 util-linux >/dev/null
fi
id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
(cd "$root" && cargo build --release --bins --quiet)

say "fresh demo directory $D"
if [ -f "$D/pg/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$D/pg" -m immediate stop >/dev/null 2>&1 || true; fi
if [ -f "$D/restored/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$D/restored" -m immediate stop >/dev/null 2>&1 || true; fi
rm -rf "$D"; mkdir -p "$D/bin"
# The binaries go where the postgres user can run them (the checkout may be under /root).
install -m 755 "$root/target/release/pgvault" "$root/target/release/pgvault-archive" "$D/bin/"
chown -R postgres: "$D"
PV="$D/bin/pgvault"; PVA="$D/bin/pgvault-archive"

say "demo cluster on port $PORT with archive_command = pgvault-archive push"
as_pg "$PGBIN/initdb" -D "$D/pg" -k -A trust -U postgres >/dev/null
cat >>"$D/pg/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$D'
wal_level = replica
archive_mode = on
archive_command = '$PVA --config $D/pgvault.toml push %p'
max_wal_senders = 5
CONF
as_pg "$PGBIN/pg_ctl" -D "$D/pg" -l "$D/pg.log" -w start >/dev/null

head -c 32 /dev/urandom | base64 >"$D/passphrase"; chmod 600 "$D/passphrase"; chown postgres: "$D/passphrase"
cat >"$D/pgvault.toml" <<CONF
[postgres]
host = "$D"
port = $PORT
user = "postgres"
pgdata = "$D/pg"

[repository]
url = "file://$D/repo"

[compression]
algorithm = "zstd"
level = 3

[encryption]
passphrase_file = "$D/passphrase"
CONF
chown postgres: "$D/pgvault.toml"
psql() { as_pg "$PGBIN/psql" -h "$D" -p "$1" -U postgres -X -q -At "${@:2}"; }

say "pgvault init"
as_pg "$PV" --config "$D/pgvault.toml" init

say "some data, then pgvault backup"
psql "$PORT" -c "CREATE TABLE orders (id int PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())"
psql "$PORT" -c "INSERT INTO orders (id, note) SELECT g, 'before the backup' FROM generate_series(1, 1000) g"
as_pg "$PV" --config "$D/pgvault.toml" backup

say "more rows, then the moment to go back to, then a mistake"
psql "$PORT" -c "INSERT INTO orders (id, note) SELECT g, 'after the backup' FROM generate_series(1001, 1500) g"
sleep 1
TARGET=$(psql "$PORT" -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
sleep 1
psql "$PORT" -c "DELETE FROM orders WHERE id % 2 = 0"
psql "$PORT" -c "SELECT pg_switch_wal()" >/dev/null
echo "target time: $TARGET (rows before it: 1500; the DELETE after it must not be restored)"
for _ in $(seq 100); do
  last=$(psql "$PORT" -c "SELECT last_archived_wal FROM pg_stat_archiver")
  cur=$(psql "$PORT" -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
  [ -n "$last" ] && [[ "$last" < "$cur" ]] && break
  sleep 0.2
done

say "pgvault list"
as_pg "$PV" --config "$D/pgvault.toml" list

say "pgvault restore --target-time '$TARGET'"
as_pg "$PV" --config "$D/pgvault.toml" restore --pgdata "$D/restored" --target-time "$TARGET"

say "start the restored cluster on port $RPORT"
as_pg "$PGBIN/pg_ctl" -D "$D/restored" -l "$D/restored.log" -w -o "-p $RPORT -c archive_mode=off" start >/dev/null
for _ in $(seq 150); do
  [ "$(psql "$RPORT" -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break
  sleep 0.2
done
rows=$(psql "$RPORT" -c "SELECT count(*) FROM orders")
evens=$(psql "$RPORT" -c "SELECT count(*) FROM orders WHERE id % 2 = 0")
live=$(psql "$PORT" -c "SELECT count(*) FROM orders")
echo "live cluster: $live rows (after the DELETE); restored cluster: $rows rows, $evens even ids"

as_pg "$PGBIN/pg_ctl" -D "$D/restored" -m fast stop >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$D/pg" -m fast stop >/dev/null
if [ "$rows" = 1500 ] && [ "$evens" = 750 ]; then
  say "OK: the restored cluster holds exactly the 1500 rows committed before $TARGET"
else
  say "FAILED: expected 1500 rows with 750 even ids"; exit 1
fi
