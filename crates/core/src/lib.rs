//! pgvault's engine: PostgreSQL base backups over the replication protocol, an encrypted and
//! checksummed repository on local disk or object storage, the WAL archive behind
//! `archive_command`/`restore_command`, and point-in-time restore.
//!
//! The layout follows the data path:
//! - [`protocol`]: the replication-protocol client (`IDENTIFY_SYSTEM`, `BASE_BACKUP`).
//! - [`server`]: connection settings and queries against the live cluster.
//! - [`format`](mod@format): how every stored object is compressed, encrypted and authenticated.
//! - [`storage`]: the seam to local disk and object stores.
//! - [`repository`]: the repository layout, descriptor, keys and backup catalogs.
//! - [`backup`], [`archive`], [`restore`]: the three jobs.
//! - [`copy`]: replicating a repository into a second one, for disaster recovery.
//! - [`timeline`]: the archive model (timelines, gaps, windows) every job asks before acting.
//! - [`config`], [`lsn`], [`wal`], [`progress`]: shared vocabulary.
//! - `tls_verify`: the TLS certificate policies of the replication client and of object stores.

pub mod archive;
pub mod backup;
pub mod config;
pub mod copy;
pub mod drill;
pub mod failpoint;
pub mod format;
pub mod lsn;
pub mod metrics;
pub mod pgserver;
pub mod progress;
pub mod protocol;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod server;
pub mod storage;
pub mod survey;
pub mod timeline;
mod tls_verify;
pub mod units;
pub mod verify;
pub mod wal;

/// This build's version, for catalogs and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
