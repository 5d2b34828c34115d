//! Batch push: the `.ready` segments after the one PostgreSQL asked for, stored together.
//!
//! `archive_command` is called one segment at a time, and each call pays a process start, the
//! repository descriptor read, the memory-hard key derivation and a store connection before it
//! can compress and store 16 MiB. [`push_ahead`] lets the call for segment S also store the next
//! ready segments with the repository it already opened (one key derivation, one connection
//! pool), several at once: the files are read and compressed on blocking threads while others
//! are being sealed and uploaded. Each segment stored gets a marker ([`super::pushed`]) written
//! only after the store confirmed it, so PostgreSQL's own call for it returns at once.
//!
//! A segment that fails here (store error, different content already archived) gets no marker
//! and is simply pushed, or refused, when PostgreSQL asks for it.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;

use super::pushed::{PushedMarker, PushedMarkers};
use super::{prepare_push, push_prepared, ArchiveError, PushOutcome};
use crate::repository::Repository;
use crate::wal::WalFileName;

/// What [`push_ahead`] did.
#[derive(Debug, Default)]
pub struct AheadReport {
    /// Stored (or found stored identically) and marked.
    pub stored: Vec<WalFileName>,
    /// Not stored or not marked; PostgreSQL's own call for these does the normal push.
    pub failed: Vec<(WalFileName, ArchiveError)>,
}

/// Stores the segments `names` of `pg_wal`, up to `parallel` at once, and marks each one stored
/// in `markers` as stored in the repository labelled `label`.
pub async fn push_ahead(
    repo: &Repository,
    pg_wal: &Path,
    names: &[WalFileName],
    parallel: usize,
    markers: &PushedMarkers,
    label: &str,
) -> AheadReport {
    let results: Vec<(WalFileName, Result<PushOutcome, ArchiveError>)> = futures::stream::iter(names.iter().copied())
        .map(|name| async move { (name, push_one(repo, pg_wal, name, markers, label).await) })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut report = AheadReport::default();
    for (name, r) in results {
        match r {
            Ok(_) => report.stored.push(name),
            Err(e) => report.failed.push((name, e)),
        }
    }
    report.stored.sort();
    report
}

async fn push_one(
    repo: &Repository,
    pg_wal: &Path,
    name: WalFileName,
    markers: &PushedMarkers,
    label: &str,
) -> Result<PushOutcome, ArchiveError> {
    let path = pg_wal.join(name.to_string());
    let codec = repo.codec();
    let label = label.to_string();
    // The marker describes exactly the bytes that are stored: hashed from the same buffer.
    let (wal, marker) = tokio::task::spawn_blocking(move || {
        let wal = prepare_push(&path, &codec)?;
        let marker = PushedMarker::of(&wal.data, &label);
        Ok::<_, ArchiveError>((wal, marker))
    })
    .await
    .map_err(|e| ArchiveError::Worker(e.to_string()))??;
    failpoint_delay().await;
    let outcome = push_prepared(repo, wal).await?;
    failpoint_delay().await;
    markers.record(&name, &marker)?;
    Ok(outcome)
}

/// TEST-ONLY: with `PGVAULT_FAILPOINT=archive:push-delay-ms=N`, waits N ms before and after each
/// segment stored ahead, so that kill -9 tests can land inside a batch. Inert otherwise.
async fn failpoint_delay() {
    let Ok(v) = std::env::var("PGVAULT_FAILPOINT") else {
        return;
    };
    let ms = v
        .split(',')
        .find_map(|e| e.trim().strip_prefix("archive:push-delay-ms=")?.parse::<u64>().ok());
    if let Some(ms) = ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
