//! The prefetch side of `fetch`, its background worker, and `spool-clean`.
//!
//! After a segment came from the repository, `fetch` starts a detached worker process
//! (`pgvault-archive prefetch-worker CURRENT SEGMENT_SIZE PG_WAL`, [`start_worker`]) and returns at once, so
//! recovery replays while the worker downloads; a `fetch` served from the spool starts one too
//! when less than half a window is left, so the spool stays ahead of recovery. At most one worker
//! runs per spool ([`pgvault_core::archive::spool_worker`]). The worker ([`worker`], [`ahead`])
//! downloads the next
//! `[archive] get_prefetch` segments recovery will ask for (on the target timeline, as far as
//! the history files recovery fetched tell), `get_parallel` at once, with the repository that
//! call already opened. Each is authenticated and checked as a segment of the cluster before it
//! is written to the spool ([`pgvault_core::archive::spool`]). The first one that is not archived
//! (the end of the archive so far) or that fails (store down, corrupt) ends the window: nothing
//! is written for it, so the later request for it takes the normal path, with its retries and
//! its exit codes. A wrong guess (a timeline switch not foreseen) only costs a download.
//!
//! [`serve`] hands a checked spool entry to PostgreSQL; [`spool_clean`] removes the spool at
//! promotion.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pgvault_core::archive::spool::{segments_after, Spool};
use pgvault_core::archive::spool_worker::{remove_lock_file, running_plan, WorkerLock};
use pgvault_core::archive::{self, write_atomically, ArchiveError};
use pgvault_core::config::{ArchiveConfig, Config};
use pgvault_core::repository::Repository;
use pgvault_core::wal::{self, WalFileName, WalKind};

/// How long a `fetch` waits for a segment the running worker is downloading before it fetches
/// the segment itself.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(30);
/// How often it looks.
const WAIT_STEP: Duration = Duration::from_millis(10);

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
    match spool.get(name) {
        Ok(Some(plain)) => match write_atomically(dest, &plain, false) {
            Ok(()) => {
                spool.remove(name);
                Some(segment_size_of(name, &plain))
            }
            Err(e) => {
                eprintln!("pgvault-archive: note: cannot restore {name} from the prefetch spool ({e}); fetching it from the repository");
                None
            }
        },
        Ok(None) => None,
        Err(why) => {
            eprintln!("pgvault-archive: the prefetched copy of {name} failed its check ({why}) and was removed; fetching {name} from the repository");
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

/// The window after `current` (on the target timeline as far as the spooled history files
/// tell), with the spool trimmed to it; returns the segments of the window not spooled yet.
fn plan_window(spool: &Spool, current: &WalFileName, cfg: &ArchiveConfig, segment_size: u64) -> Vec<WalFileName> {
    let target = spool.target_history(current.timeline);
    let window = segments_after(current, cfg.get_prefetch, target.as_ref(), segment_size);
    spool.retain(&window);
    window.into_iter().filter(|n| !spool.contains(n)).collect()
}

/// Downloads `todo` into the spool, in order, stopping at the first one missing or failing
/// (see the module documentation). Each segment is a task of its own, so that decryption,
/// decompression and the checks of different segments run on different cores.
async fn ahead(repo: &Arc<Repository>, spool: &Spool, todo: Vec<WalFileName>, cfg: &ArchiveConfig) {
    let mut downloads = futures::stream::iter(todo)
        .map(|name| {
            let (repo, spool) = (Arc::clone(repo), spool.clone());
            let task = tokio::spawn(async move { download(&repo, &spool, &name).await });
            async move { (name, task.await) }
        })
        .buffered(cfg.get_parallel.max(1));
    while let Some((name, result)) = downloads.next().await {
        match result {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => break,
            Ok(Err(why)) => {
                eprintln!(
                    "pgvault-archive: note: prefetching {name} failed ({why}); it is fetched when recovery asks for it"
                );
                break;
            }
            Err(e) => {
                eprintln!(
                    "pgvault-archive: note: prefetching {name} failed ({e}); it is fetched when recovery asks for it"
                );
                break;
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
    if running_plan(&Spool::new(pg_wal)).is_some() {
        return;
    }
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
/// runs), publishes its plan (before the slow repository open, so that a `fetch` arriving
/// meanwhile waits for it rather than downloading the same segment), opens the repository and
/// downloads the window after CURRENT.
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
    let todo = plan_window(&spool, &current, &config.archive, segment_size);
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
    ahead(&repo, &spool, todo, &config.archive).await;
    drop(lock);
    ExitCode::SUCCESS
}

/// `spool-clean`: removes `pg_wal/.pgvault/prefetch` of the data directory `data_dir`, after
/// the worker (if one runs) finished, at most [`WAIT_FOR_WORKER`] later.
pub fn spool_clean(data_dir: &Path) -> ExitCode {
    let spool = Spool::new(&data_dir.join("pg_wal"));
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
