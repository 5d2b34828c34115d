//! Choosing and loading the parent of an incremental backup, and the fallbacks when none fits.
//!
//! An incremental backup needs, before it starts: PostgreSQL 17 or later, `summarize_wal = on`,
//! a parent backup in the repository (the newest backup for `incr`, the newest full for `diff`)
//! whose catalog and `backup_manifest` read back intact. Anything else the server checks itself
//! when it receives the manifest (WAL summaries back to the parent, the parent's timeline an
//! ancestor of the current one) and answers with an error, which `backup` treats the same way:
//! per `[backup] incremental_fallback`, a full backup instead (logged with the reason) or a
//! failure. On PostgreSQL 15 and 16 an incremental backup is refused outright: a full backup
//! there would not be what the user asked for and never could be.

use super::incremental::{choose_parent, IncrementalFallback};
use super::{BackupError, BackupOptions};
use crate::config::Config;
use crate::protocol::Connection;
use crate::repository::catalog::BackupKind;
use crate::repository::Repository;
use crate::server;

/// The parent an incremental backup is taken against.
pub struct Parent {
    pub id: String,
    pub manifest: Vec<u8>,
}

/// What to do when the incremental backup cannot be taken for `why`: `Ok(None)` (take a full
/// backup, logged) or the error.
#[allow(clippy::result_large_err)]
pub fn fall_back(opts: &BackupOptions, why: String) -> Result<Option<Parent>, BackupError> {
    match opts.incremental_fallback {
        IncrementalFallback::Full => {
            tracing::warn!(
                "an {} backup cannot be taken: {why}; taking a full backup instead ([backup] incremental_fallback = \"fail\" makes this an error)",
                opts.kind
            );
            Ok(None)
        }
        IncrementalFallback::Fail => Err(BackupError::NoIncremental {
            kind: opts.kind.to_string(),
            why,
        }),
    }
}

/// The parent of the backup `opts` asks for, `None` for a full backup (asked for, or the fallback).
pub async fn prepare(
    config: &Config,
    repo: &Repository,
    opts: &BackupOptions,
    pg_version_num: u32,
    sql: &mut Connection,
) -> Result<Option<Parent>, BackupError> {
    if opts.kind == BackupKind::Full {
        return Ok(None);
    }
    if pg_version_num < 170_000 {
        return Err(BackupError::IncrementalUnsupported {
            kind: opts.kind.to_string(),
            version: format!("{}.{}", pg_version_num / 10000, pg_version_num % 10000),
        });
    }
    let summarize = server::show(sql, config, "summarize_wal").await?;
    if summarize != "on" {
        return fall_back(
            opts,
            format!(
                "summarize_wal is {summarize} on the server, so it keeps no WAL summaries to find the changed blocks; set summarize_wal = on (a reload suffices)"
            ),
        );
    }
    let listing = repo.backup_summaries().await?;
    let id = match choose_parent(opts.kind, &listing.backups, pg_version_num) {
        Ok(id) => id,
        Err(why) => return fall_back(opts, why.to_string()),
    };
    if let Err(e) = repo.load_catalog(&id).await {
        return fall_back(opts, format!("the parent backup {id} cannot be read ({e})"));
    }
    match repo.get_manifest(&id).await {
        Ok(Some(manifest)) => Ok(Some(Parent { id, manifest })),
        Ok(None) => fall_back(opts, format!("the parent backup {id} has no stored backup_manifest")),
        Err(e) => fall_back(opts, format!("the backup_manifest of parent {id} cannot be read ({e})")),
    }
}
