//! Batch push: the `.ready` segments after the one PostgreSQL asked for, stored together.
//!
//! `archive_command` is called one segment at a time, and each call pays a process start, the
//! repository descriptor read, the memory-hard key derivation and a store connection before it
//! can compress and store 16 MiB. [`push_ahead`] lets the call for segment S also store the next
//! ready segments with the repository it already opened (one key derivation, one connection
//! pool), several at once: each segment is a task of its own (read and compressed on a blocking
//! thread, sealed and uploaded on the runtime's workers), so on a multi-threaded runtime the
//! compression and encryption of different segments use different cores. Each segment stored gets a marker ([`super::pushed`]) written
//! only after the store confirmed it, so PostgreSQL's own call for it returns at once.
//!
//! A segment that fails here (store error, different content already archived) gets no marker
//! and is simply pushed, or refused, when PostgreSQL asks for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    repo: &Arc<Repository>,
    pg_wal: &Path,
    names: &[WalFileName],
    parallel: usize,
    markers: &PushedMarkers,
    label: &str,
) -> AheadReport {
    let results: Vec<(WalFileName, Result<PushOutcome, ArchiveError>)> = futures::stream::iter(names.iter().copied())
        .map(|name| {
            let job = PushJob {
                repo: Arc::clone(repo),
                path: pg_wal.join(name.to_string()),
                name,
                markers: markers.clone(),
                label: label.to_string(),
            };
            async move {
                match tokio::spawn(job.run()).await {
                    Ok(r) => (name, r),
                    Err(e) => (name, Err(ArchiveError::Worker(e.to_string()))),
                }
            }
        })
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

/// One segment stored ahead, as a task of its own.
struct PushJob {
    repo: Arc<Repository>,
    path: PathBuf,
    name: WalFileName,
    markers: PushedMarkers,
    label: String,
}

impl PushJob {
    async fn run(self) -> Result<PushOutcome, ArchiveError> {
        let PushJob {
            repo,
            path,
            name,
            markers,
            label,
        } = self;
        // Segments compress side by side, one core each: zstd's own threads would only add
        // copies and hand-offs.
        let mut codec = repo.wal_codec();
        codec.zstd_workers = 0;
        // The marker describes exactly the bytes that are stored: hashed from the same buffer.
        let (wal, marker) = tokio::task::spawn_blocking(move || {
            let wal = prepare_push(&path, &codec)?;
            let marker = PushedMarker::of(&wal.data, &label);
            Ok::<_, ArchiveError>((wal, marker))
        })
        .await
        .map_err(|e| ArchiveError::Worker(e.to_string()))??;
        failpoint_delay().await;
        let outcome = push_prepared(&repo, wal).await?;
        failpoint_delay().await;
        markers.record(&name, &marker)?;
        Ok(outcome)
    }
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

#[cfg(test)]
mod config_tests {
    use crate::config::Config;

    fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
        let text = format!("[postgres]\n[repository]\nurl = \"file:///r\"\n{extra}");
        Config::parse(&text, std::path::Path::new("/etc/pgvault/test.toml"))
    }

    #[test]
    fn archive_settings_have_defaults_and_bounds() {
        let c = parse("").expect("defaults");
        let a = &c.archive;
        assert_eq!(
            (a.push_batch, a.push_parallel, a.get_prefetch, a.get_parallel),
            (16, 4, 8, 4)
        );
        let c = parse("[archive]\npush_batch = 1\nget_prefetch = 0\n").expect("off");
        assert_eq!((c.archive.push_batch, c.archive.get_prefetch), (1, 0));
        for (bad, key) in [
            ("push_batch = 0", "archive.push_batch"),
            ("push_batch = 257", "archive.push_batch"),
            ("push_parallel = 0", "archive.push_parallel"),
            ("get_prefetch = 1000", "archive.get_prefetch"),
            ("get_parallel = 65", "archive.get_parallel"),
            ("push_batchh = 3", "push_batchh"),
        ] {
            let err = parse(&format!("[archive]\n{bad}\n")).expect_err(bad).to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn async_settings_are_opt_in_and_checked() {
        let c = parse("").expect("defaults");
        let a = &c.archive;
        assert!(!a.is_async());
        assert_eq!((a.push_ack.as_str(), a.queue_max_bytes()), ("repository", None));
        assert_eq!(a.async_wait(), std::time::Duration::from_secs(60));
        let c = parse("[archive]\npush_mode = \"async\"\npush_ack = \"spool\"\narchive_push_queue_max = \"4GB\"\narchive_async_wait = \"5s\"\nspool_path = \"/var/spool/pgvault\"\n")
            .expect("async");
        let a = &c.archive;
        assert!(a.is_async());
        assert_eq!(a.queue_max_bytes(), Some(4 << 30), "1 GB = 1024 MB");
        assert_eq!(a.async_wait(), std::time::Duration::from_secs(5));
        for (bad, key) in [
            ("push_mode = \"fast\"", "archive.push_mode"),
            ("push_ack = \"disk\"", "archive.push_ack"),
            ("spool_path = \"spool\"", "archive.spool_path"),
            ("archive_push_queue_max = \"lots\"", "archive.archive_push_queue_max"),
            ("archive_push_queue_max = \"0\"", "archive.archive_push_queue_max"),
            ("archive_async_wait = \"0s\"", "archive.archive_async_wait"),
            ("archive_async_wait = \"soon\"", "archive.archive_async_wait"),
        ] {
            let err = parse(&format!("[archive]\n{bad}\n")).expect_err(bad).to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }
}
