//! Asynchronous push: the spool, the queue accounting, the worker's lock and its status file.
//!
//! With `[archive] push_mode = "async"`, PostgreSQL's `archive_command` no longer stores its
//! segment itself: a detached worker (`pgvault-archive push-worker`, one per spool) stores every
//! `.ready` segment with one repository (one key derivation) and the batch machinery of
//! [`super::batch`], marking each one stored with a content-checked marker
//! ([`super::pushed`]). The foreground call only makes sure the worker runs and waits for its
//! segment's marker (`push_ack = "repository"`), or copies its segment, fsync'd, into the spool
//! and returns (`push_ack = "spool"`, where the worker stores from the spool copy).
//!
//! This module is the part of that both sides share and that can be tested without a server:
//! where the spool is ([`AsyncSpool::resolve`]: `pg_wal/.pgvault/push` by default, never
//! elsewhere in the data directory, which base backups would carry), how much WAL waits
//! ([`AsyncSpool::queue_bytes`], what `archive_push_queue_max` is compared with), the worker's
//! lock ([`WorkerLock`]) and the status file through which the worker tells the foreground calls
//! what went wrong ([`WorkerStatus`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::pushed::STATE_DIR;
use super::{write_atomically, ArchiveError};
use crate::config::ArchiveConfig;
use crate::wal::{WalFileName, WalKind};

const DEFAULT_DIR: &str = "push";
const QUEUE_DIR: &str = "queue";
const LOCK_FILE: &str = "worker.lock";
const STATUS_FILE: &str = "status.json";

/// The spool of one `pg_wal`.
#[derive(Clone, Debug)]
pub struct AsyncSpool {
    dir: PathBuf,
}

impl AsyncSpool {
    /// The spool for `pg_wal` under `cfg`: `spool_path` when set, else `pg_wal/.pgvault/push`.
    /// A `spool_path` inside the data directory (the parent of `pg_wal`) but outside `pg_wal`
    /// is refused: base backups would carry it.
    pub fn resolve(pg_wal: &Path, cfg: &ArchiveConfig) -> Result<AsyncSpool, ArchiveError> {
        let Some(p) = &cfg.spool_path else {
            return Ok(AsyncSpool {
                dir: pg_wal.join(STATE_DIR).join(DEFAULT_DIR),
            });
        };
        let abs_wal = std::path::absolute(pg_wal).unwrap_or_else(|_| pg_wal.to_path_buf());
        if let Some(data_dir) = abs_wal.parent() {
            if p.starts_with(data_dir) && !p.starts_with(&abs_wal) {
                return Err(ArchiveError::SpoolPlacement {
                    path: p.clone(),
                    why: format!(
                        "it is inside the data directory {} (base backups would carry it); put it under pg_wal or outside the data directory",
                        data_dir.display()
                    ),
                });
            }
        }
        Ok(AsyncSpool { dir: p.clone() })
    }

    pub fn at(dir: &Path) -> AsyncSpool {
        AsyncSpool { dir: dir.to_path_buf() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `push_ack = "spool"` keeps the segments it acknowledged and the worker has not
    /// stored yet.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.join(QUEUE_DIR)
    }

    /// Copies segment `src` into the spool queue, durably (fsync of the file and the directory
    /// before the rename is visible), so that acknowledging it to PostgreSQL is safe against a
    /// crash of this machine (not against the loss of its disk).
    pub fn enqueue(&self, name: &WalFileName, src: &Path) -> Result<(), ArchiveError> {
        let data = std::fs::read(src).map_err(|source| ArchiveError::Read {
            path: src.to_path_buf(),
            source,
        })?;
        let q = self.queue_dir();
        std::fs::create_dir_all(&q).map_err(|source| ArchiveError::Write {
            path: q.clone(),
            source,
        })?;
        write_atomically(&q.join(name.to_string()), &data, true)
    }

    /// The segments waiting in the spool queue, oldest first.
    pub fn queued(&self) -> Vec<WalFileName> {
        let mut out: Vec<WalFileName> = list_dir(&self.queue_dir())
            .into_iter()
            .filter_map(|(n, _)| WalFileName::parse(&n).ok())
            .filter(|n| n.kind == WalKind::Segment)
            .collect();
        out.sort();
        out
    }

    /// Removes a stored segment's spool copy.
    pub fn dequeue(&self, name: &WalFileName) {
        let _ = std::fs::remove_file(self.queue_dir().join(name.to_string()));
    }

    /// The un-archived WAL `archive_push_queue_max` is compared with: with `spool_ack` the size
    /// of the spool queue (PostgreSQL already recycles what was acknowledged), otherwise the sum
    /// of the `.ready` segments' sizes in `pg_wal`.
    pub fn queue_bytes(&self, pg_wal: &Path, spool_ack: bool) -> u64 {
        if spool_ack {
            list_dir(&self.queue_dir())
                .into_iter()
                .filter(|(n, _)| WalFileName::parse(n).is_ok())
                .map(|(_, size)| size)
                .sum()
        } else {
            ready_segments(pg_wal)
                .iter()
                .map(|n| std::fs::metadata(pg_wal.join(n.to_string())).map_or(0, |m| m.len()))
                .sum()
        }
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    fn status_path(&self) -> PathBuf {
        self.dir.join(STATUS_FILE)
    }

    /// What the worker last reported (`None`: nothing yet, or unreadable).
    pub fn status(&self) -> Option<WorkerStatus> {
        let raw = std::fs::read(self.status_path()).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    /// Publishes the worker's status (atomically: a reader sees the old or the new one).
    pub fn set_status(&self, status: &WorkerStatus) -> Result<(), ArchiveError> {
        let body = serde_json::to_vec(status).map_err(|e| ArchiveError::Write {
            path: self.status_path(),
            source: std::io::Error::other(e),
        })?;
        std::fs::create_dir_all(&self.dir).map_err(|source| ArchiveError::Write {
            path: self.dir.clone(),
            source,
        })?;
        write_atomically(&self.status_path(), &body, false)
    }

    /// Whether a worker holds the lock of this spool.
    pub fn worker_running(&self) -> bool {
        let Ok(f) = File::open(self.lock_path()) else {
            return false;
        };
        Flock::lock(f, FlockArg::LockSharedNonblock).is_err()
    }

    /// The process id the running worker wrote into its lock file.
    pub fn worker_pid(&self) -> Option<u32> {
        if !self.worker_running() {
            return None;
        }
        std::fs::read_to_string(self.lock_path()).ok()?.trim().parse().ok()
    }
}

/// The current time as the status file and the dropped-WAL record spell it (so callers need no
/// clock crate of their own).
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// What the worker tells the foreground calls: its last error (store down, a segment refused),
/// and the segments that failed with it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub at: DateTime<Utc>,
    /// `None`: the last pass stored everything it tried.
    pub error: Option<String>,
    /// The segments the error is about; empty with an error: every segment (e.g. the
    /// repository could not be opened).
    pub failed: Vec<WalFileName>,
}

impl WorkerStatus {
    /// The error that concerns segment `name`, when it was reported after `since`.
    pub fn error_for(&self, name: &WalFileName, since: DateTime<Utc>) -> Option<&str> {
        let e = self.error.as_deref()?;
        (self.at >= since && (self.failed.is_empty() || self.failed.contains(name))).then_some(e)
    }
}

/// The held worker lock (an exclusive `flock` for the worker's life; it dies with the process,
/// so a killed worker never blocks the next one).
pub struct WorkerLock {
    _file: Flock<File>,
}

impl WorkerLock {
    /// Takes the lock and writes this process's id into it; `None` when another worker holds it.
    pub fn try_take(spool: &AsyncSpool) -> Option<WorkerLock> {
        std::fs::create_dir_all(&spool.dir).ok()?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(spool.lock_path())
            .ok()?;
        let mut file = Flock::lock(f, FlockArg::LockExclusiveNonblock).ok()?;
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Some(WorkerLock { _file: file })
    }
}

/// Every WAL segment PostgreSQL has marked ready (`archive_status/*.ready`), oldest first.
/// History, `.backup` and `.partial` files are left to PostgreSQL's own (synchronous) calls.
pub fn ready_segments(pg_wal: &Path) -> Vec<WalFileName> {
    let mut out: Vec<WalFileName> = list_dir(&pg_wal.join("archive_status"))
        .into_iter()
        .filter_map(|(n, _)| WalFileName::parse(n.strip_suffix(".ready")?).ok())
        .filter(|n| n.kind == WalKind::Segment)
        .collect();
    out.sort();
    out
}

/// `(name, size)` of the regular files in `dir` (nothing when it cannot be read).
fn list_dir(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((e.file_name().to_str()?.to_string(), meta.len()))
        })
        .collect()
}

#[cfg(test)]
#[path = "async_mode_tests.rs"]
mod tests;
