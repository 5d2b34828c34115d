//! The prefetch spool of `restore_command`: segments downloaded ahead of recovery's requests.
//!
//! Recovery asks for one WAL file at a time. `pgvault-archive fetch` therefore downloads the next
//! segments recovery will ask for, in parallel, into `pg_wal/.pgvault/prefetch/` (inside
//! `pg_wal`, whose contents base backups skip, never elsewhere in the data directory), and serves
//! later requests from there without opening the repository.
//!
//! Safety: an entry is written only after the whole object was downloaded, authenticated
//! (decryption and identity check) and checked as a segment of the repository's cluster; it is
//! written to a temporary name and renamed, and it carries its own name, length and SHA-256 in a
//! header line. An entry is served only when all of these match, so a torn write, a flipped byte
//! or a file renamed by hand is never handed to PostgreSQL: it is removed and the segment is
//! fetched from the repository as if it had never been prefetched. A prefetch that fails (store
//! down, not archived yet) leaves no entry, so it can never turn into "not found": the later
//! request goes to the repository with the usual retries. The spool holds at most the window the
//! last miss asked for, and is removed at promotion (`pgvault-archive spool-clean` as
//! `recovery_end_command`, and by the first `archive_command` push after it).
//!
//! History files recovery fetched are kept in the spool too (`<tli>.history`), so that the
//! prefetch follows the target timeline's switch points the way recovery will
//! ([`timeline_for_segment`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::pushed::STATE_DIR;
use super::{write_atomically, ArchiveError};
use crate::lsn::TimelineId;
use crate::timeline::{parse_history, HistoryEntry};
use crate::wal::{WalFileName, WalKind};

const PREFETCH_DIR: &str = "prefetch";
const MAGIC: &str = "pgvault-prefetch 1";
/// Longer than any header line the spool writes.
const MAX_HEADER: usize = 256;

/// The prefetch spool of one `pg_wal` directory.
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
}

/// Why an entry was not served (for the log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("its header is missing, torn or names another file")]
    BadHeader,
    #[error("its length or SHA-256 differ from its header's")]
    BadContent,
}

impl Spool {
    pub fn new(pg_wal: &Path) -> Spool {
        Spool {
            dir: pg_wal.join(STATE_DIR).join(PREFETCH_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &WalFileName) -> PathBuf {
        self.dir.join(name.to_string())
    }

    /// Stores the authenticated plaintext of `name`. Not fsynced: a torn entry fails its check.
    pub fn put(&self, name: &WalFileName, plain: &[u8]) -> Result<(), ArchiveError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| ArchiveError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let header = format!(
            "{MAGIC} {name} {} {}\n",
            plain.len(),
            hex::encode(Sha256::digest(plain))
        );
        let mut data = Vec::with_capacity(header.len() + plain.len());
        data.extend_from_slice(header.as_bytes());
        data.extend_from_slice(plain);
        write_atomically(&self.path(name), &data, false)
    }

    /// Whether an entry exists for `name` (not checked).
    pub fn contains(&self, name: &WalFileName) -> bool {
        self.path(name).exists()
    }

    /// The checked plaintext of `name`'s entry: `Ok(None)` when there is none, `Err` when there
    /// is one that fails its check (it is removed then).
    pub fn get(&self, name: &WalFileName) -> Result<Option<Vec<u8>>, Rejected> {
        let path = self.path(name);
        let Ok(raw) = read_file(&path) else {
            return Ok(None);
        };
        let checked = check_entry(name, &raw);
        if checked.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        checked.map(|body| Some(raw[raw.len() - body..].to_vec()))
    }

    /// How many segment entries come after `name` in WAL order (what is left of the window).
    pub fn count_after(&self, name: &WalFileName) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| WalFileName::parse(e.file_name().to_str()?).ok())
            .filter(|n| n.kind == WalKind::Segment && n > name)
            .count()
    }

    /// Removes `name`'s entry.
    pub fn remove(&self, name: &WalFileName) {
        let _ = std::fs::remove_file(self.path(name));
    }

    /// Removes every segment entry not in `keep` (and leftover temporary files); history entries
    /// stay. Keeps the spool bounded to one prefetch window.
    pub fn retain(&self, keep: &[WalFileName]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let n = e.file_name();
            let parsed = n.to_str().and_then(|s| WalFileName::parse(s).ok());
            let wanted = match parsed {
                Some(p) if p.kind == WalKind::History => true,
                Some(p) => keep.contains(&p),
                None => false,
            };
            if !wanted {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes the whole spool (at promotion). A spool that does not exist is fine.
    pub fn remove_all(&self) -> Result<bool, ArchiveError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ArchiveError::Write {
                path: self.dir.clone(),
                source,
            }),
        }
    }

    /// The history of the highest timeline recovery fetched that is `tli` or descends from it:
    /// `(timeline, its history)`.
    pub fn target_history(&self, tli: TimelineId) -> Option<(TimelineId, Vec<HistoryEntry>)> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        let mut histories: Vec<WalFileName> = entries
            .flatten()
            .filter_map(|e| WalFileName::parse(e.file_name().to_str()?).ok())
            .filter(|n| n.kind == WalKind::History && n.timeline >= tli)
            .collect();
        histories.sort();
        histories.into_iter().rev().find_map(|n| {
            let plain = self.get(&n).ok()??;
            let entries = parse_history(n.timeline, &plain).ok()?;
            let descends = n.timeline == tli || entries.iter().any(|e| e.parent == tli);
            descends.then_some((n.timeline, entries))
        })
    }
}

fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut raw = Vec::new();
    f.read_to_end(&mut raw)?;
    Ok(raw)
}

/// Checks a spool entry against the name it is served as; returns the body's length.
fn check_entry(name: &WalFileName, raw: &[u8]) -> Result<usize, Rejected> {
    let end = raw
        .iter()
        .take(MAX_HEADER)
        .position(|b| *b == b'\n')
        .ok_or(Rejected::BadHeader)?;
    let header = std::str::from_utf8(&raw[..end]).map_err(|_| Rejected::BadHeader)?;
    let rest = header.strip_prefix(MAGIC).ok_or(Rejected::BadHeader)?;
    let mut words = rest.split_whitespace();
    let (Some(n), Some(len), Some(sha), None) = (words.next(), words.next(), words.next(), words.next()) else {
        return Err(Rejected::BadHeader);
    };
    if n != name.to_string() {
        return Err(Rejected::BadHeader);
    }
    let len: usize = len.parse().map_err(|_| Rejected::BadHeader)?;
    let body = &raw[end + 1..];
    if body.len() != len || hex::encode(Sha256::digest(body)) != sha {
        return Err(Rejected::BadContent);
    }
    Ok(len)
}

/// The timeline recovery reads segment number `segno` from, when its target timeline is
/// `target` with history `history`: the newest timeline of the ancestry whose start is at or
/// before that segment (PostgreSQL's `XLogFileReadAnyTLI` tries them newest first).
pub fn timeline_for_segment(segno: u64, target: TimelineId, history: &[HistoryEntry], segment_size: u64) -> TimelineId {
    // Timeline `history[i].parent` runs from history[i-1].switch_lsn (0 for the first) to
    // history[i].switch_lsn; `target` starts at the last switch point.
    let starts = std::iter::once(0u64).chain(history.iter().map(|e| e.switch_lsn.segment(segment_size)));
    let tlis = history.iter().map(|e| e.parent).chain(std::iter::once(target));
    let mut chosen = history.first().map(|e| e.parent).unwrap_or(target);
    for (start, tli) in starts.zip(tlis) {
        if start <= segno {
            chosen = tli;
        }
    }
    chosen
}

/// The next `count` segments recovery will ask for after `current` (a segment), following the
/// target timeline's history when one is known.
pub fn segments_after(
    current: &WalFileName,
    count: usize,
    target: Option<&(TimelineId, Vec<HistoryEntry>)>,
    segment_size: u64,
) -> Vec<WalFileName> {
    let segno = current.segment_number(segment_size);
    (1..=count as u64)
        .map(|i| {
            let n = segno + i;
            let tli = match target {
                Some((t, h)) => timeline_for_segment(n, *t, h, segment_size),
                None => current.timeline,
            };
            WalFileName::from_segment_number(tli, n, segment_size)
        })
        .collect()
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
