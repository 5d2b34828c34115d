//! The PostgreSQL-side files every target shares: the `postgresql.conf` include that turns
//! archiving on (plus TLS and `tune`'s advice), a `pg_hba.conf` limited to the given networks
//! with `scram-sha-256`, the `pgvault.toml` template with `[schedule]` and `[metrics]`, and
//! PgBouncer's configuration.

use std::fmt::Write;

use pgvault_core::units::format_duration;

use super::{archive_timeout, Cidr, Options, Tls, JOBS, METRICS_PORT};

/// Where pgvault's configuration lives on every target.
pub(super) const CONFIG_PATH: &str = "/etc/pgvault/pgvault.toml";

/// The settings pgvault's include owns; `tune`'s values for these names are left out.
const OWNED: [&str; 10] = [
    "wal_level",
    "max_wal_senders",
    "archive_mode",
    "archive_command",
    "archive_timeout",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_min_protocol_version",
    "password_encryption",
];

/// Where the server finds its TLS pair: `(cert, key)` in the server's file system.
pub(super) fn tls_paths<'a>(opts: &'a Options, default_dir: &'a str) -> Option<(String, String)> {
    match &opts.tls {
        Tls::Off => None,
        Tls::Files { cert, key } => Some((cert.display().to_string(), key.display().to_string())),
        Tls::SelfSigned => Some((format!("{default_dir}/server.crt"), format!("{default_dir}/server.key"))),
    }
}

/// Single-quotes a `postgresql.conf` value.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `postgresql.conf` include (`include 'pgvault.conf'`). `tls` is where the server reads its
/// pair (differs per target).
pub(super) fn include(opts: &Options, tls: Option<(String, String)>) -> String {
    let mut s = String::new();
    let timeout = format_duration(archive_timeout(opts.rpo));
    let _ = write!(
        s,
        "# pgvault: continuous archiving (rendered by `pgvault deploy`; regenerated, do not edit).\n\
         # Include it from postgresql.conf:  include 'pgvault.conf'\n\n\
         # WAL for archiving and base backups over the replication protocol.\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         # Every completed WAL segment goes to the repository.\n\
         archive_mode = on\n\
         archive_command = {}\n\
         # Force a segment switch at least this often: half the RPO ({}).\n\
         archive_timeout = '{timeout}'\n\
         # Passwords hashed with SCRAM (pg_hba.conf accepts only scram-sha-256).\n\
         password_encryption = 'scram-sha-256'\n",
        conf_quote(&format!("pgvault-archive --config {CONFIG_PATH} push %p")),
        format_duration(opts.rpo),
    );
    if let Some((cert, key)) = tls {
        let _ = write!(
            s,
            "\n# TLS for client connections.\nssl = on\nssl_cert_file = {}\nssl_key_file = {}\n\
             ssl_min_protocol_version = 'TLSv1.2'\n",
            conf_quote(&cert),
            conf_quote(&key)
        );
    }
    let tuned: Vec<_> = opts.tuning.iter().filter(|r| !OWNED.contains(&r.name)).collect();
    if !tuned.is_empty() {
        s.push_str("\n# Resources (`pgvault tune`).\n");
        for r in tuned {
            let _ = write!(s, "# {}\n{} = {}\n", r.reason, r.name, r.value);
        }
    }
    s
}

/// Where clients may connect from, in `pg_hba.conf`: `local_net` is an extra source of the
/// target (Compose: `samenet`, the stack's own network); `backup_from_cidrs` also lets the
/// `pgvault` role replicate from the given networks (Kubernetes: the scheduler's pod network).
pub(super) fn hba(opts: &Options, local_net: Option<&str>, backup_from_cidrs: bool) -> String {
    let host = if opts.tls == Tls::Off { "host" } else { "hostssl" };
    let mut s = String::from(
        "# pg_hba.conf rendered by `pgvault deploy`: scram-sha-256 (peer for local OS users), only the networks named.\n\
         # TYPE   DATABASE     USER      ADDRESS          METHOD\n\
         local    all          postgres                   peer\n\
         local    all          all                        scram-sha-256\n\
         local    replication  all                        peer\n\
         host     all          all       127.0.0.1/32     scram-sha-256\n\
         host     all          all       ::1/128          scram-sha-256\n\
         host     replication  pgvault   127.0.0.1/32     scram-sha-256\n\
         host     replication  pgvault   ::1/128          scram-sha-256\n",
    );
    if let Some(net) = local_net {
        let _ = writeln!(s, "host     all          all       {net:<16} scram-sha-256");
        let _ = writeln!(s, "host     replication  pgvault   {net:<16} scram-sha-256");
    }
    for cidr in opts.allow_cidrs.iter().map(Cidr::as_str) {
        let _ = writeln!(s, "{host:<8} all          all       {cidr:<16} scram-sha-256");
        if backup_from_cidrs {
            let _ = writeln!(s, "{host:<8} replication  pgvault   {cidr:<16} scram-sha-256");
        }
    }
    s
}

/// Where the scheduler reaches the database, for `[postgres]`.
pub(super) struct PgEndpoint<'a> {
    pub host: &'a str,
    pub user: &'a str,
    pub pgdata: Option<&'a str>,
    pub sslmode: &'a str,
}

/// `pgvault.toml`: the cluster, the repository, and what the scheduler runs when.
pub(super) fn pgvault_toml(opts: &Options, pg: &PgEndpoint, passphrase_file: Option<&str>, listen: &str) -> String {
    let q = super::yq;
    let mut s = String::from(
        "# pgvault configuration rendered by `pgvault deploy` (see docs/CONFIGURATION.md).\n\
         # Secrets are not in this file: the database password comes from PGPASSWORD (or\n\
         # password_file), the repository passphrase from PGVAULT_PASSPHRASE or passphrase_file.\n\n\
         [postgres]\n",
    );
    let _ = writeln!(s, "host = {}\nport = 5432\nuser = {}", q(pg.host), q(pg.user));
    if let Some(d) = pg.pgdata {
        let _ = writeln!(s, "pgdata = {}", q(d));
    }
    let _ = writeln!(s, "sslmode = {}", q(pg.sslmode));
    let _ = writeln!(s, "\n[repository]\nurl = {}", q(&opts.repository));
    if let Some(p) = passphrase_file {
        let _ = writeln!(s, "\n[encryption]\npassphrase_file = {}", q(p));
    }
    let _ = writeln!(
        s,
        "\n[objectives]\nrpo = {}\nrto = \"30min\"\n\n[retention]\nrecovery_window = \"7d\"\nkeep_daily = 7\n",
        q(&format_duration(opts.rpo))
    );
    s.push_str("[schedule]\n");
    for job in &JOBS {
        let _ = writeln!(s, "{} = {}", job.name, q(job.cron));
    }
    s.push_str("timezone = \"UTC\"\n\n[metrics]\n");
    let _ = writeln!(s, "listen = {}", q(&format!("{listen}:{METRICS_PORT}")));
    s
}

/// The SQL (run once at initdb by the Compose stack, shown in docs for the others) creating the
/// backup role and, with PgBouncer, its `auth_query` lookup function.
pub(super) fn roles_script(opts: &Options) -> String {
    let mut s = String::from(
        "#!/bin/sh\n\
         # Roles for pgvault (and PgBouncer), rendered by `pgvault deploy`; runs once, at initdb.\n\
         set -eu\n\
         psql -v ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" --dbname \"$POSTGRES_DB\" \\\n\
         \x20 --set pgvault_password=\"$PGVAULT_DB_PASSWORD\" <<'SQL'\n\
         CREATE ROLE pgvault LOGIN REPLICATION PASSWORD :'pgvault_password';\n\
         GRANT pg_monitor TO pgvault;\n\
         GRANT EXECUTE ON FUNCTION pg_switch_wal() TO pgvault;\n\
         GRANT EXECUTE ON FUNCTION pg_create_restore_point(text) TO pgvault;\n\
         SQL\n",
    );
    if opts.pgbouncer.is_some() {
        s.push_str(
            "psql -v ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" --dbname \"$POSTGRES_DB\" \\\n\
             \x20 --set auth_password=\"$PGBOUNCER_AUTH_PASSWORD\" <<'SQL'\n\
             CREATE ROLE pgbouncer_auth LOGIN PASSWORD :'auth_password';\n\
             SQL\n\
             for db in template1 \"$POSTGRES_DB\"; do\n\
             \x20 psql -v ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" --dbname \"$db\" <<'SQL'\n\
             CREATE SCHEMA IF NOT EXISTS pgbouncer;\n\
             REVOKE ALL ON SCHEMA pgbouncer FROM PUBLIC;\n\
             GRANT USAGE ON SCHEMA pgbouncer TO pgbouncer_auth;\n\
             CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename text)\n\
             RETURNS TABLE (usename name, passwd text) LANGUAGE sql SECURITY DEFINER\n\
             SET search_path = pg_catalog AS\n\
             $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = p_usename $$;\n\
             REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC;\n\
             GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO pgbouncer_auth;\n\
             SQL\n\
             done\n",
        );
    }
    s
}

/// `pgbouncer.ini`: SCRAM, users looked up with `auth_query` as `pgbouncer_auth` (whose own
/// password the container writes into `auth_file` from the environment at start).
pub(super) fn pgbouncer_ini(opts: &Options, db_host: &str, auth_file: &str, tls: Option<(&str, &str)>) -> String {
    let mode = opts.pgbouncer.map(|m| m.as_str()).unwrap_or("transaction");
    let mut s = format!(
        ";; PgBouncer in front of PostgreSQL, rendered by `pgvault deploy`.\n\
         [databases]\n\
         * = host={db_host} port=5432 auth_user=pgbouncer_auth\n\n\
         [pgbouncer]\n\
         listen_addr = 0.0.0.0\n\
         listen_port = 6432\n\
         auth_type = scram-sha-256\n\
         auth_file = {auth_file}\n\
         auth_user = pgbouncer_auth\n\
         auth_query = SELECT usename, passwd FROM pgbouncer.get_auth($1)\n\
         pool_mode = {mode}\n\
         max_client_conn = 500\n\
         default_pool_size = 20\n\
         reserve_pool_size = 5\n\
         server_reset_query = DISCARD ALL\n\
         ignore_startup_parameters = extra_float_digits,options\n\
         log_connections = 1\n\
         log_disconnections = 1\n"
    );
    if let Some((cert, key)) = tls {
        let _ = write!(
            s,
            "client_tls_sslmode = require\nclient_tls_cert_file = {cert}\nclient_tls_key_file = {key}\n\
             server_tls_sslmode = require\n"
        );
    }
    s
}
