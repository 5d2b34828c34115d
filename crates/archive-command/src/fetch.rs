//! `fetch %f %p`: PostgreSQL's `restore_command`, with the standby rules and the prefetch spool.
//!
//! A segment the prefetch spool holds a checked copy of ([`crate::prefetch`]) is served from
//! there without opening the repository. Everything else is fetched as before, and after a
//! segment was restored from the repository the next ones are downloaded ahead. A spool entry
//! that fails its check is removed and the file fetched from the repository: a prefetched copy
//! can make a fetch faster, never change its answer.
//!
//! **Standby mode.** PostgreSQL runs `restore_command` in the data directory, so a
//! `standby.signal` there means this server follows the archive and will ask again for a segment
//! reported missing. When the store is down, throttled or timing out
//! ([`StorageErrorKind::is_unavailable`], found through the typed error chain, never by text), the
//! fetch is retried [`STANDBY_ATTEMPTS`] times [`STANDBY_RETRY_DELAY`] apart and then the segment
//! is reported as not yet available (exit 1, with a line on stderr). A `.history` file is
//! retried the same way but then stops recovery (126): at promotion PostgreSQL asks for history
//! files to choose a new timeline id, and a false "missing" would make it reuse an id that exists.
//! Nothing of this runs on the happy path: `standby.signal` is only looked at after a failure.
//!
//! Caveat: with `recovery_target_timeline = 'latest'` (PostgreSQL's default) a standby that has
//! run out of WAL also asks for the next timeline's `.history` file on every retry cycle
//! (PostgreSQL's `rescanLatestTimeLine`), and nothing tells that probe apart from the one at
//! promotion. An outage longer than the retries therefore still stops such a standby (126);
//! one following `recovery_target_timeline = 'current'` keeps running.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pgvault_core::archive::pushed::pg_wal_of;
use pgvault_core::archive::spool::Spool;
use pgvault_core::archive::{self, write_atomically, ArchiveError};
use pgvault_core::config::Config;
use pgvault_core::repository::{Repository, RepositoryError};
use pgvault_core::storage::StorageErrorKind;
use pgvault_core::wal::{WalFileName, WalKind};

use crate::load_config;
use crate::prefetch;

/// Exit status that makes PostgreSQL abort recovery rather than treat the file as missing.
const FETCH_FATAL: u8 = 126;
/// Exit status for "not (yet) in the archive": PostgreSQL ends recovery, or a standby asks again.
const FETCH_MISSING: u8 = 1;
/// How often a standby's fetch tries a store that is down before giving up for now.
const STANDBY_ATTEMPTS: u32 = 3;
/// The pause between those attempts (about 10 s in all, on top of the store client's own retries).
const STANDBY_RETRY_DELAY: Duration = Duration::from_secs(5);
/// The file whose presence in the data directory (the working directory) marks a standby.
const STANDBY_SIGNAL: &str = "standby.signal";

pub async fn fetch(config_path: Option<&Path>, name: &str, dest: &Path) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(e) => return fetch_failed(name, &e),
    };
    let parsed = WalFileName::parse(name).ok();
    let spool = pg_wal_of(dest)
        .filter(|_| config.archive.get_prefetch > 0)
        .map(|w| Spool::new(&w));
    if let (Some(spool), Some(n), Some(pg_wal)) = (&spool, parsed, pg_wal_of(dest)) {
        if n.kind == WalKind::Segment {
            spool.set_cursor(&n);
        }
        if let Some(served) = prefetch::serve(spool, &n, dest) {
            if let Some(segment_size) = served {
                prefetch::refill(&config, &pg_wal, &n, segment_size);
            }
            return ExitCode::SUCCESS;
        }
    }
    let mut repo: Option<Arc<Repository>> = None;
    let mut attempt = 1;
    loop {
        let result = fetch_once(&config, &mut repo, name, dest).await;
        let e = match result {
            Ok(Some(plain)) => {
                if let (Some(spool), Some(n)) = (&spool, parsed) {
                    after_restore(spool, &n, &plain, dest, &config);
                }
                return ExitCode::SUCCESS;
            }
            // Quiet: PostgreSQL asks for files past the end of the archive (and for timelines
            // that never existed) as a matter of course.
            Ok(None) => return ExitCode::from(FETCH_MISSING),
            Err(e) => e,
        };
        let kind = storage_kind(&e);
        let standby = kind.is_some_and(StorageErrorKind::is_unavailable) && Path::new(STANDBY_SIGNAL).exists();
        match verdict(kind, standby, is_history(name), attempt < STANDBY_ATTEMPTS) {
            Verdict::Retry => {
                eprintln!(
                    "pgvault-archive: fetch {name}: the repository is unavailable ({e}); retrying in {}s (attempt {attempt} of {STANDBY_ATTEMPTS})",
                    STANDBY_RETRY_DELAY.as_secs()
                );
                tokio::time::sleep(STANDBY_RETRY_DELAY).await;
                attempt += 1;
            }
            Verdict::Missing if kind == Some(StorageErrorKind::NotFound) => return ExitCode::from(FETCH_MISSING),
            Verdict::Missing => {
                eprintln!("pgvault-archive: fetch {name}: the repository is still unavailable after {STANDBY_ATTEMPTS} attempts ({e}); reporting {name} as not yet available so that this standby keeps running and asks again");
                return ExitCode::from(FETCH_MISSING);
            }
            Verdict::Fatal => return fetch_failed(name, &anyhow::Error::new(e)),
        }
    }
}

/// What a restored file means for the spool: a segment starts the worker for the next window, a
/// history file is kept so that the window follows the target timeline.
fn after_restore(spool: &Spool, name: &WalFileName, plain: &[u8], dest: &Path, config: &Config) {
    match name.kind {
        WalKind::Segment => {
            if let (Some(pg_wal), Some(size)) = (pg_wal_of(dest), prefetch::segment_size_of(name, plain)) {
                prefetch::start_worker(config, &pg_wal, name, size);
            }
        }
        WalKind::History => {
            if let Err(e) = spool.put(name, plain) {
                eprintln!("pgvault-archive: note: cannot keep {name} in the prefetch spool: {e}");
            }
        }
        WalKind::Partial | WalKind::Backup { .. } => {}
    }
}

/// One attempt: opens the repository unless an earlier attempt did, then fetches and writes
/// `dest`. Returns the restored bytes (`None`: not archived).
async fn fetch_once(
    config: &Config,
    repo: &mut Option<Arc<Repository>>,
    name: &str,
    dest: &Path,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    let opened = match repo.take() {
        Some(r) => r,
        None => Arc::new(Repository::open(config).await?),
    };
    let result = fetch_plain(&opened, name, dest).await;
    *repo = Some(opened);
    result
}

async fn fetch_plain(repo: &Repository, name: &str, dest: &Path) -> Result<Option<Vec<u8>>, ArchiveError> {
    let name = WalFileName::parse(name)?;
    let Some(plain) = archive::fetch_checked(repo, &name).await? else {
        return Ok(None);
    };
    write_atomically(dest, &plain, false)?;
    Ok(Some(plain))
}

fn fetch_failed(name: &str, e: &anyhow::Error) -> ExitCode {
    eprintln!("pgvault-archive: fetch {name} failed: {e:#}; recovery is stopped so that it does not end early and promote at the wrong point. Fix the cause and start the server again.");
    ExitCode::from(FETCH_FATAL)
}

/// The storage error kind behind a failed fetch, if the store is what failed.
fn storage_kind(e: &ArchiveError) -> Option<StorageErrorKind> {
    match e {
        ArchiveError::Storage(s) | ArchiveError::Repository(RepositoryError::Storage(s)) => Some(s.kind()),
        _ => None,
    }
}

fn is_history(name: &str) -> bool {
    pgvault_core::wal::WalFileName::parse(name).is_ok_and(|n| n.kind == pgvault_core::wal::WalKind::History)
}

/// What to do about a failed fetch attempt.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Wait and try again.
    Retry,
    /// Exit 1: not in the archive, or (standby) not available yet.
    Missing,
    /// Exit 126: stop recovery.
    Fatal,
}

/// The exit policy: `kind` is the storage error kind (None: not a storage failure), `standby`
/// whether this server is a standby, `more` whether attempts are left.
fn verdict(kind: Option<StorageErrorKind>, standby: bool, history: bool, more: bool) -> Verdict {
    match kind {
        Some(StorageErrorKind::NotFound) => Verdict::Missing,
        Some(k) if k.is_unavailable() && standby => {
            if more {
                Verdict::Retry
            } else if history {
                Verdict::Fatal
            } else {
                Verdict::Missing
            }
        }
        _ => Verdict::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgvault_core::storage::{OperationError, StorageError};
    use StorageErrorKind as K;

    #[test]
    fn standby_waits_out_a_store_that_is_down() {
        for k in [K::Transient, K::Throttled] {
            assert_eq!(verdict(Some(k), true, false, true), Verdict::Retry);
            assert_eq!(
                verdict(Some(k), true, false, false),
                Verdict::Missing,
                "segment: not yet available"
            );
            assert_eq!(verdict(Some(k), true, true, true), Verdict::Retry);
            assert_eq!(
                verdict(Some(k), true, true, false),
                Verdict::Fatal,
                "history: never a false 'missing'"
            );
            assert_eq!(
                verdict(Some(k), false, false, true),
                Verdict::Fatal,
                "outside standby mode a failure stops recovery"
            );
        }
    }

    #[test]
    fn real_failures_always_stop_recovery_and_missing_is_always_missing() {
        for standby in [false, true] {
            for k in [K::Auth, K::Permanent, K::AlreadyExists] {
                assert_eq!(verdict(Some(k), standby, false, true), Verdict::Fatal);
            }
            // Corruption, wrong passphrase, foreign WAL: not storage errors.
            assert_eq!(verdict(None, standby, false, true), Verdict::Fatal);
            assert_eq!(verdict(Some(K::NotFound), standby, true, false), Verdict::Missing);
        }
    }

    #[test]
    fn finds_the_storage_kind_through_the_typed_chain() {
        let down = || {
            StorageError::from(OperationError::new(
                K::Transient,
                "s3://b",
                "read",
                "wal/x",
                "connection refused",
            ))
        };
        assert_eq!(storage_kind(&ArchiveError::Storage(down())), Some(K::Transient));
        assert_eq!(
            storage_kind(&ArchiveError::Repository(RepositoryError::Storage(down()))),
            Some(K::Transient)
        );
        let corrupt = ArchiveError::Repository(RepositoryError::PassphraseRequired {
            location: "s3://b".into(),
        });
        assert_eq!(storage_kind(&corrupt), None);
    }

    #[test]
    fn tells_history_files() {
        assert!(is_history("00000002.history"));
        assert!(!is_history("000000010000000000000003"));
        assert!(!is_history("000000010000000000000002.00000028.backup"));
    }
}
