//! WAL dropped by `archive_push_queue_max`: the local record, and the gaps still to be recorded
//! in the repository.
//!
//! When asynchronous archiving drops a segment (reports it archived to PostgreSQL without
//! storing it, so that `pg_wal` cannot fill the disk while the store is down), three things must
//! say so: a loud log line (the caller's), this local state file `<spool>/dropped.json`, which
//! the metrics read through [`read`] (the repository may be unreachable, that is why WAL is being
//! dropped), and a gap marker in the repository ([`crate::repository::gaps`]). The marker cannot
//! always be written at the moment of the drop, so the dropped runs wait here as *pending* until
//! the push worker has stored them ([`pending`], [`recorded`]). Consecutive drops of one timeline
//! extend one run while it is still pending.
//!
//! Read-modify-write of the file is serialized with an `flock` on `<spool>/dropped.lock`: the
//! foreground `push` and the worker both update it.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{write_atomically, ArchiveError};
use crate::repository::gaps::{WalGapMarker, REASON_QUEUE_MAX};
use crate::wal::WalFileName;

const STATE_FILE: &str = "dropped.json";
const LOCK_FILE: &str = "dropped.lock";

/// What was dropped since the spool was created: the metric.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedStats {
    /// Segments dropped.
    pub count: u64,
    /// Their total size.
    pub bytes: u64,
    /// The first and the most recent segment dropped.
    pub first: Option<WalFileName>,
    pub last: Option<WalFileName>,
    /// When the most recent one was dropped.
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DroppedState {
    #[serde(flatten)]
    stats: DroppedStats,
    /// Runs not yet recorded in the repository.
    #[serde(default)]
    pending: Vec<WalGapMarker>,
}

fn state_path(spool: &Path) -> PathBuf {
    spool.join(STATE_FILE)
}

fn load(spool: &Path) -> Result<DroppedState, ArchiveError> {
    let path = state_path(spool);
    match std::fs::read(&path) {
        Ok(raw) => serde_json::from_slice(&raw).map_err(|e| ArchiveError::Read {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DroppedState::default()),
        Err(source) => Err(ArchiveError::Read { path, source }),
    }
}

/// Runs `f` on the state under the lock and saves it.
fn update<T>(spool: &Path, f: impl FnOnce(&mut DroppedState) -> T) -> Result<T, ArchiveError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Write { path, source }
    };
    std::fs::create_dir_all(spool).map_err(werr(spool))?;
    let lock_path = spool.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(werr(&lock_path))?;
    let _guard = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| ArchiveError::Write {
        path: lock_path.clone(),
        source: e.into(),
    })?;
    let mut state = load(spool)?;
    let out = f(&mut state);
    let body = serde_json::to_vec_pretty(&state).map_err(|e| ArchiveError::Write {
        path: state_path(spool),
        source: std::io::Error::other(e),
    })?;
    write_atomically(&state_path(spool), &body, true)?;
    Ok(out)
}

/// The dropped-WAL counter of the spool `spool` (all zero when nothing was ever dropped).
pub fn read(spool: &Path) -> Result<DroppedStats, ArchiveError> {
    Ok(load(spool)?.stats)
}

/// Records that segment `name` (`size` bytes; segments of `segment_size`) was dropped at `now`.
pub fn record(
    spool: &Path,
    name: &WalFileName,
    size: u64,
    segment_size: u64,
    now: DateTime<Utc>,
) -> Result<DroppedStats, ArchiveError> {
    update(spool, |s| {
        note_drop(s, name, size, segment_size, now);
        s.stats.clone()
    })
}

fn note_drop(s: &mut DroppedState, name: &WalFileName, size: u64, segment_size: u64, now: DateTime<Utc>) {
    s.stats.count += 1;
    s.stats.bytes += size;
    s.stats.first.get_or_insert(*name);
    s.stats.last = Some(*name);
    s.stats.at = Some(now);
    let follows = |m: &WalGapMarker| {
        m.last.timeline == name.timeline && m.last.segment_number(segment_size) + 1 == name.segment_number(segment_size)
    };
    match s.pending.last_mut() {
        Some(m) if follows(m) => {
            m.last = *name;
            m.at = now;
        }
        Some(m) if m.first <= *name && *name <= m.last => m.at = now,
        _ => s.pending.push(WalGapMarker {
            first: *name,
            last: *name,
            at: now,
            reason: REASON_QUEUE_MAX.to_string(),
        }),
    }
}

/// The dropped runs not yet recorded in the repository.
pub fn pending(spool: &Path) -> Result<Vec<WalGapMarker>, ArchiveError> {
    Ok(load(spool)?.pending)
}

/// Forgets the pending runs in `done` (stored in the repository). A run extended since it was
/// read differs and stays pending, to be stored again with its new end.
pub fn recorded(spool: &Path, done: &[WalGapMarker]) -> Result<(), ArchiveError> {
    update(spool, |s| s.pending.retain(|p| !done.contains(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SS: u64 = 16 << 20;

    fn seg(tli: u32, n: u64) -> WalFileName {
        WalFileName::from_segment_number(tli, n, SS)
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    #[test]
    fn drops_count_and_consecutive_ones_extend_one_pending_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("spool");
        assert_eq!(read(&spool).expect("empty"), DroppedStats::default());
        record(&spool, &seg(1, 5), SS, SS, t(0)).expect("drop");
        record(&spool, &seg(1, 6), SS, SS, t(1)).expect("drop");
        let s = record(&spool, &seg(1, 9), SS, SS, t(2)).expect("drop");
        assert_eq!((s.count, s.bytes), (3, 3 * SS));
        assert_eq!((s.first, s.last, s.at), (Some(seg(1, 5)), Some(seg(1, 9)), Some(t(2))));
        let p = pending(&spool).expect("pending");
        let runs: Vec<_> = p.iter().map(|m| (m.first, m.last)).collect();
        assert_eq!(runs, vec![(seg(1, 5), seg(1, 6)), (seg(1, 9), seg(1, 9))]);
        assert_eq!(p[0].at, t(1));
        assert_eq!(p[0].reason, REASON_QUEUE_MAX);
        // Another timeline never extends a run.
        record(&spool, &seg(2, 10), SS, SS, t(3)).expect("drop");
        assert_eq!(pending(&spool).expect("pending").len(), 3);
    }

    #[test]
    fn a_run_extended_after_it_was_read_stays_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path();
        record(spool, &seg(1, 5), SS, SS, t(0)).expect("drop");
        let read_by_worker = pending(spool).expect("pending");
        record(spool, &seg(1, 6), SS, SS, t(1)).expect("drop");
        recorded(spool, &read_by_worker).expect("recorded");
        let left = pending(spool).expect("pending");
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!((left[0].first, left[0].last), (seg(1, 5), seg(1, 6)));
        recorded(spool, &left).expect("recorded");
        assert!(pending(spool).expect("pending").is_empty());
        assert_eq!(read(spool).expect("stats").count, 2, "the counter is not reset");
    }

    #[test]
    fn a_damaged_state_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        assert!(read(dir.path()).is_err());
        assert!(record(dir.path(), &seg(1, 1), SS, SS, t(0)).is_err());
    }
}
