//! Talking to the live cluster: connection settings from the configuration, the cluster's
//! identity, and the archiver's status.
//!
//! Both the replication connection (for `BASE_BACKUP`) and the ordinary SQL connection (for
//! `pg_stat_archiver` and snapshots) are built here from `[postgres]`, with the password looked up
//! the way libpq does, so every command reaches the server the same way.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::protocol::{self, ConnParams, Connection, ProtocolError, SslMode};
use crate::repository::ClusterIdentity;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot reach PostgreSQL at {target}: {source}")]
    Connect { target: String, source: Box<ProtocolError> },
    #[error("PostgreSQL at {target}: {context}: {source}")]
    Query {
        target: String,
        context: &'static str,
        source: Box<ProtocolError>,
    },
    #[error("PostgreSQL at {target}: {0}", target = .1)]
    Unexpected(String, String),
}

/// Connection parameters for `[postgres]`; a replication connection looks its password up in
/// `.pgpass` under the database name `replication`, as libpq does.
pub fn conn_params(config: &Config, replication: bool) -> Result<ConnParams, ServerError> {
    let pg = &config.postgres;
    let target = describe(config);
    let sslmode: SslMode = pg.sslmode.parse().map_err(|e: ProtocolError| ServerError::Connect {
        target: target.clone(),
        source: Box::new(e),
    })?;
    let password_file = pg.password_file.as_ref().map(|p| config.relative_to_config(p));
    let dbname = protocol::pgpass_dbname(&pg.dbname, replication);
    let password = protocol::resolve_password(&pg.host, pg.port, dbname, &pg.user, password_file.as_deref()).map_err(
        |source| ServerError::Connect {
            target: target.clone(),
            source: Box::new(source),
        },
    )?;
    Ok(ConnParams {
        host: pg.host.clone(),
        port: pg.port,
        user: pg.user.clone(),
        dbname: Some(pg.dbname.clone()),
        password,
        sslmode,
        sslrootcert: pg.sslrootcert.as_ref().map(|p| config.relative_to_config(p)),
        application_name: "pgvault".into(),
        connect_timeout: Duration::from_secs(pg.connect_timeout.max(1)),
    })
}

/// `host:port` (or `socket-dir:port`), for messages.
pub fn describe(config: &Config) -> String {
    format!("{}:{}", config.postgres.host, config.postgres.port)
}

/// Opens a replication (`replication = true`) or ordinary SQL connection.
pub async fn connect(config: &Config, replication: bool) -> Result<Connection, ServerError> {
    let params = conn_params(config, replication)?;
    Connection::connect(&params, replication)
        .await
        .map_err(|source| ServerError::Connect {
            target: describe(config),
            source: Box::new(source),
        })
}

/// Runs a query expected to return one row.
pub async fn query_row(
    conn: &mut Connection,
    config: &Config,
    context: &'static str,
    sql: &str,
) -> Result<Vec<Option<String>>, ServerError> {
    let rows = conn.simple_query(sql).await.map_err(|source| ServerError::Query {
        target: describe(config),
        context,
        source: Box::new(source),
    })?;
    rows.into_iter()
        .next()
        .ok_or_else(|| ServerError::Unexpected(format!("{context}: no row returned"), describe(config)))
}

/// Reads one setting with `SHOW`.
pub async fn show(conn: &mut Connection, config: &Config, name: &'static str) -> Result<String, ServerError> {
    let row = query_row(conn, config, "reading a setting", &format!("SHOW {name}")).await?;
    row.into_iter()
        .next()
        .flatten()
        .ok_or_else(|| ServerError::Unexpected(format!("SHOW {name} returned nothing"), describe(config)))
}

/// Parses PostgreSQL's size display (`16MB`, `1GB`, `8192`) into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1024,
        "MB" => 1024 * 1024,
        "GB" => 1024 * 1024 * 1024,
        "TB" => 1024u64.pow(4),
        _ => return None,
    };
    Some(n * mult)
}

/// The identity of the cluster behind a replication connection.
pub async fn cluster_identity(
    conn: &mut Connection,
    config: &Config,
) -> Result<(ClusterIdentity, protocol::SystemIdentity), ServerError> {
    let sys = conn.identify_system().await.map_err(|source| ServerError::Query {
        target: describe(config),
        context: "IDENTIFY_SYSTEM",
        source: Box::new(source),
    })?;
    let seg = show(conn, config, "wal_segment_size").await?;
    let wal_segment_size = parse_size(&seg)
        .ok_or_else(|| ServerError::Unexpected(format!("unexpected wal_segment_size '{seg}'"), describe(config)))?;
    Ok((
        ClusterIdentity {
            system_identifier: sys.system_identifier,
            pg_version_num: conn.server_version_num(),
            wal_segment_size,
        },
        sys,
    ))
}

/// The server's clock (`clock_timestamp()`), so that backup start and stop times are on the same
/// clock as the commit timestamps that recovery targets are compared with, whatever this host's
/// clock says.
pub async fn server_clock(conn: &mut Connection, config: &Config) -> Result<DateTime<Utc>, ServerError> {
    let row = query_row(
        conn,
        config,
        "reading the server's clock",
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text",
    )
    .await?;
    let raw = row.into_iter().next().flatten().unwrap_or_default();
    raw.parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or_else(|| ServerError::Unexpected(format!("the server's clock read as '{raw}'"), describe(config)))
}

/// A row of `pg_stat_archiver`, for messages when WAL does not arrive.
#[derive(Debug, Default, Clone)]
pub struct ArchiverStatus {
    pub archive_mode: String,
    pub archive_command: String,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<String>,
    pub failed_count: Option<String>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
}

impl std::fmt::Display for ArchiverStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "never".into());
        write!(
            f,
            "archive_mode = {}, archive_command = '{}'; pg_stat_archiver: last archived {} at {}, {} failures, last failed {} at {}",
            self.archive_mode,
            self.archive_command,
            o(&self.last_archived_wal),
            o(&self.last_archived_time),
            self.failed_count.clone().unwrap_or_else(|| "0".into()),
            o(&self.last_failed_wal),
            o(&self.last_failed_time)
        )
    }
}

pub async fn archiver_status(conn: &mut Connection, config: &Config) -> Result<ArchiverStatus, ServerError> {
    let row = query_row(
        conn,
        config,
        "reading pg_stat_archiver",
        "SELECT current_setting('archive_mode'), current_setting('archive_command'), last_archived_wal, \
         last_archived_time::text, failed_count::text, last_failed_wal, last_failed_time::text FROM pg_stat_archiver",
    )
    .await?;
    let mut it = row.into_iter();
    let mut next = || it.next().flatten();
    Ok(ArchiverStatus {
        archive_mode: next().unwrap_or_default(),
        archive_command: next().unwrap_or_default(),
        last_archived_wal: next(),
        last_archived_time: next(),
        failed_count: next(),
        last_failed_wal: next(),
        last_failed_time: next(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MB"), Some(16 * 1024 * 1024));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("8192"), Some(8192));
        assert_eq!(parse_size("8kB"), Some(8192));
        assert_eq!(parse_size("lots"), None);
    }
}
