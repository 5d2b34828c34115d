//! pgvault's own PostgreSQL client for the few things a backup tool needs: connecting (TLS per
//! libpq's sslmode, password/md5/SCRAM authentication, libpq's password lookup), simple queries,
//! and the physical replication commands IDENTIFY_SYSTEM and BASE_BACKUP. It exists because a
//! general SQL driver does not speak the replication protocol's COPY sub-protocols, and because
//! pgvault must stream base backups without buffering them.

// ProtocolError::Server carries the server's fields inline (severity, code, message, detail,
// hint, context) so callers can match on them directly; errors are rare next to the network
// round trip that produced them, so the larger Result is an accepted cost.
#![allow(clippy::result_large_err)]

mod connection;
mod error;
mod params;
mod pgpass;
mod replication;
mod tls;

pub use connection::Connection;
pub use error::ProtocolError;
pub use params::{parse_server_version, quote_literal, ConnParams, SslMode, MIN_SERVER_VERSION_NUM};
pub use pgpass::{lookup_pgpass, pgpass_dbname, resolve_password, resolve_password_from};
pub use replication::{BackupEnd, BackupEvent, BaseBackupOptions, BaseBackupStream, SystemIdentity, TablespaceInfo};

#[cfg(test)]
mod prop_tests;
