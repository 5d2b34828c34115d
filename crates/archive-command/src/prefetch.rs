//! The prefetch side of `fetch`, its background worker, and `spool-clean`.
//!
//! After a segment came from the repository, `fetch` starts a detached worker process
//! (`pgvault-archive prefetch-worker CURRENT SEGMENT_SIZE PG_WAL`, [`start_worker`]) and returns
//! at once, so recovery replays while the worker downloads. At most one worker runs per spool
//! ([`pgvault_core::archive::spool_worker`]), and it lives as long as recovery keeps asking:
//! every `fetch` records the segment it was asked for (the spool's cursor), and the worker keeps
//! the `[archive] get_prefetch` segments after the cursor spooled, `get_parallel` downloads at
//! once, with the one repository it opened (one key derivation for the whole recovery). It
//! follows the target timeline as far as the history files recovery fetched tell. The first
//! segment that is not archived (the end of the archive so far) or that fails (store down,
//! corrupt) stops the window there: nothing is written for it, so the later request for it takes
//! the normal path, with its retries and its exit codes; a new cursor opens the window again. A
//! wrong guess (a timeline switch not foreseen) only costs a download. The worker ends when
//! recovery stops asking for [`IDLE_EXIT`], or at once when promotion asks it to.
//!
//! [`serve`] hands a checked spool entry to PostgreSQL (moved, not copied); [`spool_clean`]
//! removes the spool at promotion.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgvault_core::archive::spool::{segments_after, Spool, TakeError};
use pgvault_core::archive::spool_worker::{remove_lock_file, running_plan, WorkerLock};
use pgvault_core::archive::{self, ArchiveError};
use pgvault_core::config::{ArchiveConfig, Config};
use pgvault_core::repository::Repository;
use pgvault_core::wal::{self, WalFileName, WalKind};

/// How long a `fetch` waits for a segment the running worker is downloading before it fetches
/// the segment itself.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(30);
/// How often it looks.
const WAIT_STEP: Duration = Duration::from_millis(10);
/// How often the worker looks at the cursor while its window is full.
const WORKER_STEP: Duration = Duration::from_millis(20);
/// The worker ends when the cursor has not moved for this long and it has nothing to do.
const IDLE_EXIT: Duration = Duration::from_secs(5);

/// Serves segment `name` from the spool into `dest`. `None` when the spool has no good copy (a
/// bad one is removed, with a line on stderr) and the repository must be asked; otherwise the
/// segment size its header gives (`Some(None)`: unreadable, no refill). When the running worker
/// plans to download `name`, waits for it (at most [`WAIT_FOR_WORKER`]).
pub fn serve(spool: &Spool, name: &WalFileName, dest: &Path) -> Option<Option<u64>> {
    if name.kind != WalKind::Segment {
        return None;
    }
    let start = Instant::now();
    loop {
        if spool.contains(name) {
            return serve_entry(spool, name, dest);
        }
        let planned = running_plan(spool).is_some_and(|plan| plan.contains(name));
        if !planned || start.elapsed() > WAIT_FOR_WORKER {
            return None;
        }
        std::thread::sleep(WAIT_STEP);
    }
}

fn serve_entry(spool: &Spool, name: &WalFileName, dest: &Path) -> Option<Option<u64>> {
    match spool.take_into(name, dest) {
        Ok(Some(head)) => Some(segment_size_of(name, &head)),
        Ok(None) => None,
        Err(TakeError::Rejected(why)) => {
            eprintln!("pgvault-archive: the prefetched copy of {name} failed its check ({why}) and was removed; fetching {name} from the repository");
            None
        }
        Err(TakeError::Io(e)) => {
            eprintln!("pgvault-archive: note: cannot restore {name} from the prefetch spool ({e}); fetching it from the repository");
            None
        }
    }
}

/// The segment size a segment's first page header gives.
pub fn segment_size_of(name: &WalFileName, plain: &[u8]) -> Option<u64> {
    wal::read_segment_header(name, plain)
        .ok()
        .map(|h| u64::from(h.segment_size))
}

/// The window after `cursor` (on the target timeline as far as the spooled history files
/// tell), with the spool trimmed to it.
fn window(spool: &Spool, cursor: &WalFileName, cfg: &ArchiveConfig, segment_size: u64) -> Vec<WalFileName> {
    let target = spool.target_history(cursor.timeline);
    let window = segments_after(cursor, cfg.get_prefetch, target.as_ref(), segment_size);
    spool.retain(&window);
    window
}

/// Keeps the window after the spool's cursor downloaded (see the module documentation), until
/// recovery stops asking or promotion asks the worker to stop.
async fn keep_ahead(
    repo: &Arc<Repository>,
    spool: &Spool,
    lock: &mut WorkerLock,
    start: WalFileName,
    cfg: &ArchiveConfig,
    segment_size: u64,
) {
    let mut cursor = start;
    let mut moved_at = Instant::now();
    // The first segment of the current window that is not archived or failed: nothing at or
    // after it is downloaded until the cursor moves.
    let mut stop_at: Option<WalFileName> = None;
    let mut running: tokio::task::JoinSet<(WalFileName, Result<bool, ArchiveError>)> = tokio::task::JoinSet::new();
    let mut in_flight: Vec<WalFileName> = Vec::new();
    let mut published: Vec<WalFileName> = Vec::new();
    // Worked out (history files read, spool trimmed) only when the cursor moves.
    let mut current_window = window(spool, &cursor, cfg, segment_size);
    loop {
        if spool.stop_requested() {
            return;
        }
        if let Some(c) = spool.cursor().filter(|c| *c != cursor) {
            cursor = c;
            moved_at = Instant::now();
            stop_at = None;
            current_window = window(spool, &cursor, cfg, segment_size);
        }
        let wanted: Vec<WalFileName> = current_window
            .iter()
            .copied()
            .take_while(|n| stop_at.is_none_or(|s| *n < s))
            .filter(|n| !spool.contains(n))
            .collect();
        for n in &wanted {
            if running.len() >= cfg.get_parallel.max(1) {
                break;
            }
            if !in_flight.contains(n) {
                let (repo, spool, name) = (Arc::clone(repo), spool.clone(), *n);
                in_flight.push(name);
                running.spawn(async move { (name, download(&repo, &spool, &name).await) });
            }
        }
        if wanted != published {
            if let Err(e) = lock.set_plan(&wanted) {
                eprintln!("pgvault-archive: note: the prefetch worker cannot publish its plan: {e}");
            }
            published = wanted.clone();
        }
        if running.is_empty() && moved_at.elapsed() > IDLE_EXIT {
            return;
        }
        let done = tokio::select! {
            d = running.join_next(), if !running.is_empty() => d,
            _ = tokio::time::sleep(WORKER_STEP) => None,
        };
        let Some(done) = done else { continue };
        let (name, result) = match done {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pgvault-archive: note: a prefetch download failed ({e}); segments are fetched when recovery asks for them");
                return;
            }
        };
        in_flight.retain(|n| *n != name);
        match result {
            Ok(true) => {}
            Ok(false) => stop_at = Some(stop_at.map_or(name, |s| s.min(name))),
            Err(why) => {
                eprintln!(
                    "pgvault-archive: note: prefetching {name} failed ({why}); it is fetched when recovery asks for it"
                );
                stop_at = Some(stop_at.map_or(name, |s| s.min(name)));
            }
        }
    }
}

/// Downloads, checks and spools one segment: `Ok(false)` when it is not archived (yet).
async fn download(repo: &Repository, spool: &Spool, name: &WalFileName) -> Result<bool, ArchiveError> {
    match archive::fetch_checked(repo, name).await? {
        Some(plain) => {
            spool.put(name, &plain)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Starts a detached worker that prefetches the segments after `current` (nothing when one
/// runs already). Its notes go to PostgreSQL's log through the inherited stderr.
pub fn start_worker(config: &Config, pg_wal: &Path, current: &WalFileName, segment_size: u64) {
    let spool = Spool::new(pg_wal);
    if running_plan(&spool).is_some() {
        return;
    }
    // Recovery is asking, so a stop request left by an interrupted `spool-clean` is stale.
    spool.clear_stop();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pgvault-archive: note: cannot start the prefetch worker: {e}");
            return;
        }
    };
    let spawned = std::process::Command::new(exe)
        .arg("--config")
        .arg(&config.source)
        .arg("prefetch-worker")
        .arg(current.to_string())
        .arg(segment_size.to_string())
        .arg(pg_wal)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!("pgvault-archive: note: cannot start the prefetch worker: {e}");
    }
}

/// After serving `current` from the spool: starts a worker when less than half a window is left.
pub fn refill(config: &Config, pg_wal: &Path, current: &WalFileName, segment_size: u64) {
    let spool = Spool::new(pg_wal);
    if spool.count_after(current) * 2 < config.archive.get_prefetch {
        start_worker(config, pg_wal, current, segment_size);
    }
}

/// `prefetch-worker CURRENT SEGMENT_SIZE PG_WAL`: takes the worker lock (or exits: another one
/// runs), publishes its first plan (before the slow repository open, so that a `fetch` arriving
/// meanwhile waits for it rather than downloading the same segment), opens the repository and
/// keeps the window after the cursor downloaded.
pub async fn worker(config: Config, current: &str, segment_size: &str, pg_wal: PathBuf) -> ExitCode {
    let spool = Spool::new(&pg_wal);
    let Some(mut lock) = WorkerLock::try_take(&spool) else {
        return ExitCode::SUCCESS;
    };
    let (Ok(current), Ok(segment_size)) = (WalFileName::parse(current), segment_size.parse::<u64>()) else {
        return ExitCode::from(2);
    };
    if !segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&segment_size) {
        return ExitCode::from(2);
    }
    let start = spool.cursor().unwrap_or(current);
    let todo: Vec<WalFileName> = window(&spool, &start, &config.archive, segment_size)
        .into_iter()
        .filter(|n| !spool.contains(n))
        .collect();
    if todo.is_empty() {
        return ExitCode::SUCCESS;
    }
    if let Err(e) = lock.set_plan(&todo) {
        eprintln!("pgvault-archive: note: the prefetch worker cannot publish its plan: {e}");
    }
    let repo = match Repository::open(&config).await {
        Ok(r) if r.cluster().wal_segment_size == segment_size => Arc::new(r),
        Ok(_) => return ExitCode::from(1),
        Err(e) => {
            eprintln!("pgvault-archive: note: the prefetch worker cannot open the repository ({e}); segments are fetched when recovery asks for them");
            return ExitCode::from(1);
        }
    };
    keep_ahead(&repo, &spool, &mut lock, start, &config.archive, segment_size).await;
    drop(lock);
    ExitCode::SUCCESS
}

/// `spool-clean`: removes `pg_wal/.pgvault/prefetch` of the data directory `data_dir`, after
/// the worker (if one runs) finished, at most [`WAIT_FOR_WORKER`] later.
pub fn spool_clean(data_dir: &Path) -> ExitCode {
    let spool = Spool::new(&data_dir.join("pg_wal"));
    spool.request_stop();
    let start = Instant::now();
    while running_plan(&spool).is_some() && start.elapsed() < WAIT_FOR_WORKER {
        std::thread::sleep(WAIT_STEP);
    }
    let removed = spool.remove_all();
    remove_lock_file(&spool);
    match removed {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgvault-archive: spool-clean: {e}");
            ExitCode::from(1)
        }
    }
}
