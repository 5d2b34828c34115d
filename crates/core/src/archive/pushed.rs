//! Markers of segments a batch push stored ahead of PostgreSQL's request.
//!
//! When `archive_command` is asked for segment S it may also store the next `.ready` segments
//! (see [`ready_after`]). PostgreSQL will still call `archive_command` for each of them, and that
//! later call should return at once. What lets it is a marker `pg_wal/.pgvault/pushed/<name>`
//! written **after** the store confirmed the object, atomically (temporary file, rename). A
//! marker records the size and BLAKE3 hash of the bytes that were stored and the repository they
//! were stored in; the later call hashes the file PostgreSQL hands it now and trusts the marker
//! only when all three match. So:
//! - a crash before the store confirmed leaves no marker (the segment is pushed normally later);
//! - a crash after leaves a marker whose claim is true (the object exists with those bytes), or
//!   no marker, or an empty or torn one that does not parse: a marker is never fsynced, because
//!   losing one only costs a normal push later (which finds the identical object stored), and
//!   two fsyncs per segment would cost more than the batch saves on a slow disk;
//! - a recycled, rewritten or otherwise changed file hashes differently and is pushed normally
//!   (and refused if the repository holds other bytes under its name, as always);
//! - a marker for another repository (the configuration changed) is ignored.
//!
//! A marker is removed once it served its call, and markers of segments PostgreSQL no longer
//! lists as `.ready` are removed as stale. Nothing here renames `.ready` to `.done`: that stays
//! PostgreSQL's job.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{write_atomically, ArchiveError};
use crate::wal::{WalFileName, WalKind};

/// The state directory's name inside `pg_wal` (shared with the prefetch spool).
pub const STATE_DIR: &str = ".pgvault";
const PUSHED_DIR: &str = "pushed";
const MAGIC: &str = "pgvault-pushed 2";

/// What a marker says: `size` bytes with BLAKE3 hash `hash` are stored as this name in
/// `repository`. (Version 1 markers, with SHA-256, no longer parse: that only costs a push.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedMarker {
    pub size: u64,
    pub hash: [u8; 32],
    pub repository: String,
}

impl PushedMarker {
    /// The marker for `data` stored in `repository`.
    pub fn of(data: &[u8], repository: &str) -> PushedMarker {
        PushedMarker {
            size: data.len() as u64,
            hash: blake3::hash(data).into(),
            repository: repository.to_string(),
        }
    }

    fn render(&self) -> String {
        format!(
            "{MAGIC}\nsize {}\nblake3 {}\nrepository {}\n",
            self.size,
            hex::encode(self.hash),
            self.repository.replace('\n', " ")
        )
    }

    /// Parses a marker; `None` for anything that is not a complete, well-formed marker.
    fn parse(text: &str) -> Option<PushedMarker> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let size = lines.next()?.strip_prefix("size ")?.parse().ok()?;
        let hash = hex::decode(lines.next()?.strip_prefix("blake3 ")?).ok()?;
        let repository = lines.next()?.strip_prefix("repository ")?.to_string();
        if !text.ends_with('\n') {
            return None;
        }
        Some(PushedMarker {
            size,
            hash: hash.try_into().ok()?,
            repository,
        })
    }
}

/// The `pg_wal` directory a `%p` lives in, when it is one: batching and prefetching only ever
/// work inside `pg_wal` (never elsewhere in a data directory, which base backups would carry).
pub fn pg_wal_of(path: &Path) -> Option<PathBuf> {
    let parent = path.parent()?;
    (parent.file_name()? == "pg_wal").then(|| parent.to_path_buf())
}

/// The markers of one `pg_wal` directory.
#[derive(Clone, Debug)]
pub struct PushedMarkers {
    dir: PathBuf,
}

impl PushedMarkers {
    pub fn new(pg_wal: &Path) -> PushedMarkers {
        PushedMarkers {
            dir: pg_wal.join(STATE_DIR).join(PUSHED_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &WalFileName) -> PathBuf {
        self.dir.join(name.to_string())
    }

    /// Whether any marker file exists for `name` (valid or not).
    pub fn exists(&self, name: &WalFileName) -> bool {
        self.path(name).exists()
    }

    /// Records that `marker` is true for `name`. Call only after the store confirmed the object.
    pub fn record(&self, name: &WalFileName, marker: &PushedMarker) -> Result<(), ArchiveError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| ArchiveError::Write {
            path: self.dir.clone(),
            source,
        })?;
        write_atomically(&self.path(name), marker.render().as_bytes(), false)
    }

    /// Whether a marker vouches that the file at `file` (now) is stored as `name` in
    /// `repository`. Reads and hashes the file; any doubt (no marker, unreadable, torn, other
    /// size, other hash, other repository) is `false`. A marker that does not match is removed.
    pub fn vouches(&self, name: &WalFileName, file: &Path, repository: &str) -> bool {
        let path = self.path(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return false;
        };
        let ok = PushedMarker::parse(&text)
            .filter(|m| m.repository == repository)
            .is_some_and(|m| file_matches(file, m.size, &m.hash));
        if !ok {
            let _ = std::fs::remove_file(&path);
        }
        ok
    }

    /// Removes the marker of `name` (it served its call, or is not wanted).
    pub fn remove(&self, name: &WalFileName) {
        let _ = std::fs::remove_file(self.path(name));
    }

    /// Removes markers whose segment PostgreSQL no longer lists as ready (already archived and
    /// marked done, or removed), and leftover temporary files. Returns how many were removed.
    pub fn remove_stale(&self, pg_wal: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let status = pg_wal.join("archive_status");
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let ready = WalFileName::parse(&name).is_ok() && status.join(format!("{name}.ready")).exists();
            if !ready && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Whether the file at `path` has exactly `size` bytes with BLAKE3 hash `hash`.
fn file_matches(path: &Path, size: u64, hash: &[u8; 32]) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.metadata().map(|m| m.len()).ok() != Some(size) {
        return false;
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    total == size && <[u8; 32]>::from(hasher.finalize()) == *hash
}

/// The WAL segments PostgreSQL has marked ready to archive (`archive_status/*.ready`) that come
/// after `after` in WAL order, oldest first, at most `max`. Only whole segments: history,
/// `.backup` and `.partial` files are left to PostgreSQL's own calls (it archives history files
/// first anyway).
pub fn ready_after(pg_wal: &Path, after: &WalFileName, max: usize) -> Vec<WalFileName> {
    let Ok(entries) = std::fs::read_dir(pg_wal.join("archive_status")) else {
        return Vec::new();
    };
    let mut ready: Vec<WalFileName> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name();
            let n = n.to_str()?.strip_suffix(".ready")?.to_string();
            WalFileName::parse(&n).ok()
        })
        .filter(|n| n.kind == WalKind::Segment && n > after)
        .collect();
    ready.sort();
    ready.truncate(max);
    ready
}

#[cfg(test)]
#[path = "pushed_tests.rs"]
mod tests;
