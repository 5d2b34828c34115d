//! The lock and plan of the background prefetch worker.
//!
//! A `fetch` must return to PostgreSQL as soon as its own file is in place, so the download of
//! the next segments runs in a detached worker process (`pgvault-archive prefetch-worker`) while
//! recovery replays. At most one worker runs per spool: it holds an exclusive `flock` on
//! `pg_wal/.pgvault/prefetch.lock` for its whole life and writes into that file the names it is
//! about to download (its plan). A `fetch` for a segment that is in the running worker's plan
//! but not spooled yet waits for it (bounded) instead of downloading it a second time; anything
//! else goes to the repository at once. The lock dies with the process, so a killed worker never
//! blocks anyone.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};

use super::spool::Spool;
use crate::wal::WalFileName;

/// The held worker lock; dropping it (or the process ending) releases it.
pub struct WorkerLock {
    file: Flock<File>,
}

fn lock_path(spool: &Spool) -> PathBuf {
    spool.dir().with_extension("lock")
}

impl WorkerLock {
    /// Takes the worker lock if no other worker holds it (`None`: one does, or the lock file
    /// cannot be created).
    pub fn try_take(spool: &Spool) -> Option<WorkerLock> {
        let path = lock_path(spool);
        std::fs::create_dir_all(path.parent()?).ok()?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .ok()?;
        let file = Flock::lock(f, FlockArg::LockExclusiveNonblock).ok()?;
        Some(WorkerLock { file })
    }

    /// Publishes the names this worker is about to download.
    pub fn set_plan(&mut self, plan: &[WalFileName]) -> std::io::Result<()> {
        let text: String = plan.iter().map(|n| format!("{n}\n")).collect();
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(text.as_bytes())
    }
}

/// The plan of the running worker: `None` when no worker runs; `Some(plan)` (perhaps empty while
/// it starts) when one does.
pub fn running_plan(spool: &Spool) -> Option<Vec<WalFileName>> {
    let f = File::open(lock_path(spool)).ok()?;
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        // Nobody holds it exclusively: no worker. (Dropping the guard unlocks.)
        Ok(_) => None,
        Err((mut f, _)) => {
            let mut text = String::new();
            // A torn read (the worker rewriting its plan) only makes the caller not wait.
            let _ = f.read_to_string(&mut text);
            Some(text.lines().filter_map(|l| WalFileName::parse(l).ok()).collect())
        }
    }
}

/// Removes the lock file (at promotion, once no worker runs).
pub fn remove_lock_file(spool: &Spool) {
    let _ = std::fs::remove_file(lock_path(spool));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_at_a_time_and_its_plan_is_visible() {
        let t = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(&t.path().join("pg_wal"));
        assert_eq!(running_plan(&spool), None, "no lock file");
        let mut lock = WorkerLock::try_take(&spool).expect("first worker");
        assert!(WorkerLock::try_take(&spool).is_none(), "a second worker is refused");
        assert_eq!(running_plan(&spool), Some(Vec::new()));
        let plan = [
            WalFileName::parse("000000010000000000000005").expect("name"),
            WalFileName::parse("000000010000000000000006").expect("name"),
        ];
        lock.set_plan(&plan).expect("plan");
        lock.set_plan(&plan[1..]).expect("shorter plan");
        assert_eq!(running_plan(&spool), Some(plan[1..].to_vec()));
        drop(lock);
        assert_eq!(running_plan(&spool), None, "released");
        assert!(WorkerLock::try_take(&spool).is_some());
    }
}
