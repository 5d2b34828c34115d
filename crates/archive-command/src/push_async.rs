//! `push %p` in asynchronous mode (`[archive] push_mode = "async"`), and its background worker.
//!
//! The foreground call ([`foreground`]) never opens the repository: it
//! - answers at once when the worker already stored the segment (its marker vouches for the
//!   file's current bytes, as in a batch push);
//! - when the un-archived WAL exceeds `archive_push_queue_max`, reports the segment archived
//!   WITHOUT storing it: an `ERROR` line in PostgreSQL's log, the local counter
//!   ([`pgvault_core::archive::dropped`]) and a gap marker the worker stores in the repository;
//! - with `push_ack = "spool"`, copies the segment durably into the spool and answers;
//! - otherwise makes sure the worker runs and waits (at most `archive_async_wait`) for the
//!   segment's marker; an error the worker reports for it (status file) ends the wait with that
//!   error, so PostgreSQL's log says why and PostgreSQL retries.
//!
//! The worker ([`worker`], `pgvault-archive push-worker PG_WAL`, detached, one per spool by an
//! `flock`) opens the repository once and stores, pass after pass, the pending gap markers and
//! then the `.ready` segments without a marker (or the spooled ones), `push_batch` per pass,
//! `push_parallel` at once, through [`pgvault_core::archive::batch::push_ahead`] (marker only
//! after the store confirmed). It exits after a few idle seconds, or after failing for
//! `archive_async_wait` (the next `push` starts another).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use pgvault_core::archive::async_mode::{now, ready_segments, AsyncSpool, WorkerLock, WorkerStatus};
use pgvault_core::archive::batch::push_ahead;
use pgvault_core::archive::dropped;
use pgvault_core::archive::pushed::PushedMarkers;
use pgvault_core::config::Config;
use pgvault_core::repository::Repository;
use pgvault_core::units::format_size;
use pgvault_core::wal::WalFileName;

use crate::repository_label;

/// How often the foreground call looks for its marker.
const POLL: Duration = Duration::from_millis(20);
/// How long an idle worker waits for more work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(5);
/// Pause between the worker's passes after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// How the foreground call ended (all are exit 0 for PostgreSQL).
pub enum AsyncOutcome {
    /// Stored in the repository by the worker.
    Stored,
    /// Durably in the spool (`push_ack = "spool"`).
    Spooled,
    /// Dropped by `archive_push_queue_max`: NOT archived.
    Dropped,
}

pub async fn foreground(
    config: &Config,
    pg_wal: &Path,
    name: &WalFileName,
    path: &Path,
) -> anyhow::Result<AsyncOutcome> {
    let cfg = &config.archive;
    let spool = AsyncSpool::resolve(pg_wal, cfg)?;
    let label = repository_label(config);
    let markers = PushedMarkers::new(pg_wal);
    let spool_ack = cfg.push_ack == "spool";
    if !spool_ack && markers.vouches(name, path, &label) {
        markers.remove(name);
        return Ok(AsyncOutcome::Stored);
    }
    if let Some(max) = cfg.queue_max_bytes() {
        let size = std::fs::metadata(path)?.len();
        let queued = spool.queue_bytes(pg_wal, spool_ack) + if spool_ack { size } else { 0 };
        if queued > max {
            drop_segment(config, pg_wal, &spool, name, size, queued, max)?;
            return Ok(AsyncOutcome::Dropped);
        }
    }
    if spool_ack {
        spool.enqueue(name, path)?;
        ensure_worker(config, pg_wal, &spool);
        return Ok(AsyncOutcome::Spooled);
    }
    let since = now();
    let start = Instant::now();
    let wait = cfg.async_wait();
    let mut started: Option<Instant> = None;
    loop {
        if markers.vouches(name, path, &label) {
            markers.remove(name);
            return Ok(AsyncOutcome::Stored);
        }
        if let Some(e) = spool.status().as_ref().and_then(|s| s.error_for(name, since)) {
            bail!("the archive worker could not store it: {e}");
        }
        if started.is_none_or(|t| t.elapsed() > RETRY) && !spool.worker_running() {
            ensure_worker(config, pg_wal, &spool);
            started = Some(Instant::now());
        }
        if start.elapsed() > wait {
            bail!(
                "not stored by the archive worker within archive_async_wait = {}; PostgreSQL will retry",
                cfg.archive_async_wait
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Reports `name` archived without storing it, loudly, and leaves the gap marker to the worker.
fn drop_segment(
    config: &Config,
    pg_wal: &Path,
    spool: &AsyncSpool,
    name: &WalFileName,
    size: u64,
    queued: u64,
    max: u64,
) -> anyhow::Result<()> {
    let stats = dropped::record(spool.dir(), name, size, size, now())?;
    eprintln!(
        "pgvault-archive: ERROR: WAL segment {name} DROPPED, not archived: {} of WAL waits to be archived, more than archive_push_queue_max = {} ({} dropped so far, {} to {}). Point-in-time recovery across it is impossible: take a new full backup once the repository is reachable",
        format_size(queued),
        format_size(max),
        stats.count,
        stats.first.map(|n| n.to_string()).unwrap_or_default(),
        stats.last.map(|n| n.to_string()).unwrap_or_default(),
    );
    // The worker records the gap in the repository as soon as it can reach it.
    ensure_worker(config, pg_wal, spool);
    Ok(())
}

/// Starts a detached worker for `spool` unless one runs.
fn ensure_worker(config: &Config, pg_wal: &Path, spool: &AsyncSpool) {
    if spool.worker_running() {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pgvault-archive: cannot start the archive worker: {e}");
            return;
        }
    };
    let pg_wal = std::path::absolute(pg_wal).unwrap_or_else(|_| pg_wal.to_path_buf());
    let spawned = std::process::Command::new(exe)
        .arg("--config")
        .arg(&config.source)
        .arg("push-worker")
        .arg(&pg_wal)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!("pgvault-archive: cannot start the archive worker: {e}");
    }
}

/// `push-worker PG_WAL`: see the module documentation.
pub async fn worker(config: Config, pg_wal: PathBuf) -> ExitCode {
    let spool = match AsyncSpool::resolve(&pg_wal, &config.archive) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgvault-archive: archive worker: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(mut lock) = WorkerLock::try_take(&spool) else {
        return ExitCode::SUCCESS;
    };
    let mut w = Worker {
        label: repository_label(&config),
        markers: PushedMarkers::new(&pg_wal),
        spool_markers: PushedMarkers::new(spool.dir()),
        spool_ack: config.archive.push_ack == "spool",
        config,
        pg_wal,
        spool,
        repo: None,
        last_error: None,
    };
    let mut idle_since = Instant::now();
    let mut failing_since: Option<Instant> = None;
    loop {
        let todo = w.todo();
        let gaps = dropped::pending(w.spool.dir()).unwrap_or_default();
        if todo.1.is_empty() && gaps.is_empty() {
            if idle_since.elapsed() > IDLE_EXIT {
                // A `push` that saw this worker running just before it let go of its lock
                // started no other: look once more after letting go.
                drop(lock);
                if w.todo().1.is_empty() {
                    return ExitCode::SUCCESS;
                }
                match WorkerLock::try_take(&w.spool) {
                    Some(l) => lock = l,
                    None => return ExitCode::SUCCESS,
                }
                idle_since = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        idle_since = Instant::now();
        if w.pass(todo, gaps).await {
            failing_since = None;
        } else {
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > w.config.archive.async_wait() {
                eprintln!("pgvault-archive: the archive worker gives up for now; the next push starts another");
                return ExitCode::from(1);
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

struct Worker {
    config: Config,
    pg_wal: PathBuf,
    spool: AsyncSpool,
    label: String,
    markers: PushedMarkers,
    /// Markers of spooled segments (`push_ack = "spool"`), inside the spool.
    spool_markers: PushedMarkers,
    spool_ack: bool,
    repo: Option<Arc<Repository>>,
    last_error: Option<String>,
}

impl Worker {
    /// The next segments to store, oldest first, at most `push_batch`, and whether they come
    /// from the spool queue. The spool goes first, whatever this worker's own `push_ack`: a
    /// worker started before the setting changed still drains it.
    fn todo(&self) -> (bool, Vec<WalFileName>) {
        let queued = self.spool.queued();
        let (from_spool, mut names) = if !queued.is_empty() || self.spool_ack {
            (true, queued)
        } else {
            let ready = ready_segments(&self.pg_wal)
                .into_iter()
                .filter(|n| !self.markers.exists(n))
                .collect();
            (false, ready)
        };
        names.truncate(self.config.archive.push_batch);
        (from_spool, names)
    }

    /// One pass: gap markers, then `todo`. Whether everything tried succeeded.
    async fn pass(
        &mut self,
        (from_spool, todo): (bool, Vec<WalFileName>),
        gaps: Vec<pgvault_core::repository::gaps::WalGapMarker>,
    ) -> bool {
        let repo = match &self.repo {
            Some(r) => Arc::clone(r),
            None => match Repository::open(&self.config).await {
                Ok(r) => Arc::clone(self.repo.insert(Arc::new(r))),
                Err(e) => {
                    self.report(Some(format!("cannot open the repository: {e}")), Vec::new());
                    return false;
                }
            },
        };
        let mut stored_gaps = Vec::new();
        for g in gaps {
            match repo.put_wal_gap(&g).await {
                Ok(()) => stored_gaps.push(g),
                Err(e) => {
                    self.report(Some(format!("cannot record the dropped WAL as a gap: {e}")), Vec::new());
                    return false;
                }
            }
        }
        if let Err(e) = dropped::recorded(self.spool.dir(), &stored_gaps) {
            eprintln!("pgvault-archive: warning: {e}");
        }
        for g in &stored_gaps {
            eprintln!(
                "pgvault-archive: recorded the gap {}..{} ({}) in the repository",
                g.first,
                g.last,
                g.describe()
            );
        }
        let parallel = self.config.archive.push_parallel;
        let report = if from_spool {
            let q = self.spool.queue_dir();
            let r = push_ahead(&repo, &q, &todo, parallel, &self.spool_markers, &self.label).await;
            for n in &r.stored {
                self.spool.dequeue(n);
                self.spool_markers.remove(n);
            }
            r
        } else {
            let r = push_ahead(&repo, &self.pg_wal, &todo, parallel, &self.markers, &self.label).await;
            self.markers.remove_stale(&self.pg_wal);
            r
        };
        let ok = report.failed.is_empty();
        let error = report.failed.first().map(|(n, e)| format!("{n}: {e}"));
        self.report(error, report.failed.into_iter().map(|(n, _)| n).collect());
        ok
    }

    /// Publishes the status; logs an error once (not once per retry).
    fn report(&mut self, error: Option<String>, failed: Vec<WalFileName>) {
        if let Some(e) = &error {
            if self.last_error.as_ref() != Some(e) {
                eprintln!("pgvault-archive: the archive worker could not store WAL: {e}; retrying");
            }
        } else if self.last_error.is_some() {
            eprintln!("pgvault-archive: the archive worker stores WAL again");
        }
        self.last_error = error.clone();
        let status = WorkerStatus {
            at: now(),
            error,
            failed,
        };
        if let Err(e) = self.spool.set_status(&status) {
            eprintln!("pgvault-archive: warning: {e}");
        }
    }
}
