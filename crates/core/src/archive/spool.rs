//! The prefetch spool of `restore_command`: segments downloaded ahead of recovery's requests.
//!
//! Recovery asks for one WAL file at a time. `pgvault-archive fetch` therefore downloads the next
//! segments recovery will ask for, in parallel, into `pg_wal/.pgvault/prefetch/` (inside
//! `pg_wal`, whose contents base backups skip, never elsewhere in the data directory), and serves
//! later requests from there without opening the repository.
//!
//! Safety: an entry is written only after the whole object was downloaded, authenticated
//! (decryption and identity check) and checked as a segment of the repository's cluster; it is
//! written to a temporary name and renamed, and it carries its own name, length and BLAKE3 hash in a
//! fixed-size trailer. An entry is served only when all of these match, so a torn write, a
//! flipped byte or a file renamed by hand is never handed to PostgreSQL: it is removed and the
//! segment is fetched from the repository as if it had never been prefetched. A prefetch that
//! fails (store down, not archived yet) leaves no entry, so it can never turn into "not found":
//! the later request goes to the repository with the usual retries. The spool holds at most the
//! prefetch window, and is removed at promotion (`pgvault-archive spool-clean` as
//! `recovery_end_command`, and by the first `archive_command` push after it).
//!
//! Serving moves the file rather than copying it ([`Spool::take_into`]): the entry is first
//! renamed to a name only this call uses (so nothing else can remove or replace it meanwhile),
//! checked, cut to its body and renamed onto PostgreSQL's destination. A 16 MiB segment is read
//! once for its checksum and never written a second time.
//!
//! History files recovery fetched are kept in the spool too (`<tli>.history`), so that the
//! prefetch follows the target timeline's switch points the way recovery will
//! ([`timeline_for_segment`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::pushed::STATE_DIR;
use super::{write_atomically, ArchiveError};
use crate::lsn::TimelineId;
use crate::timeline::{parse_history, HistoryEntry};
use crate::wal::{WalFileName, WalKind};

const PREFETCH_DIR: &str = "prefetch";
const MAGIC: &str = "pgvault-prefetch 2";
/// The trailer after an entry's body: `MAGIC NAME LENGTH BLAKE3`, padded with spaces and ended
/// by a newline to exactly this many bytes.
const TRAILER: usize = 160;
/// How much of a served segment [`Spool::take_into`] hands back (its first page header).
const HEAD: usize = 512;

/// The prefetch spool of one `pg_wal` directory.
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
}

/// Why an entry was not served (for the log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("its trailer is missing, torn or names another file")]
    BadHeader,
    #[error("its length or hash differ from its trailer's")]
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
        let dest = self.path(name);
        let tmp = self.dir.join(format!("{name}{}", own_tmp_suffix()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(plain)?;
            f.write_all(&trailer(name, plain))?;
            drop(f);
            std::fs::rename(&tmp, &dest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|source| ArchiveError::Write { path: dest, source })
    }

    /// Whether an entry exists for `name` (not checked).
    pub fn contains(&self, name: &WalFileName) -> bool {
        self.path(name).exists()
    }

    /// The checked plaintext of `name`'s entry: `Ok(None)` when there is none, `Err` when there
    /// is one that fails its check (it is removed then).
    pub fn get(&self, name: &WalFileName) -> Result<Option<Vec<u8>>, Rejected> {
        let path = self.path(name);
        let Ok(mut raw) = std::fs::read(&path) else {
            return Ok(None);
        };
        match check_entry(name, &raw) {
            Ok(len) => {
                raw.truncate(len);
                Ok(Some(raw))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Moves `name`'s entry onto `dest` (in the same file system: `pg_wal`) if it passes its
    /// check, and returns the first bytes of its body; `Ok(None)` when there is no entry. An
    /// entry that fails its check is removed (`Err(Rejected)`); on an I/O error nothing is
    /// served and the entry is gone (the segment is then fetched from the repository).
    pub fn take_into(&self, name: &WalFileName, dest: &Path) -> Result<Option<Vec<u8>>, TakeError> {
        let Some(state) = self.dir.parent() else {
            return Ok(None);
        };
        let claimed = state.join(format!("{PREFETCH_DIR}.serving-{}", std::process::id()));
        if std::fs::rename(self.path(name), &claimed).is_err() {
            return Ok(None);
        }
        let result = finish_take(name, &claimed, dest);
        if result.is_err() {
            let _ = std::fs::remove_file(&claimed);
        }
        result.map(Some)
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

    /// Removes every segment entry not in `keep` (and temporary files other processes left);
    /// history entries stay. Keeps the spool bounded to one prefetch window.
    pub fn retain(&self, keep: &[WalFileName]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let own = own_tmp_suffix();
        for e in entries.flatten() {
            let n = e.file_name();
            let parsed = n.to_str().and_then(|s| WalFileName::parse(s).ok());
            let wanted = match parsed {
                Some(p) if p.kind == WalKind::History => true,
                Some(p) => keep.contains(&p),
                None => n.to_str().is_some_and(|s| s.ends_with(&own)),
            };
            if !wanted {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Records the segment recovery asked for last: the prefetch worker's window follows it.
    pub fn set_cursor(&self, name: &WalFileName) {
        if let Some(state) = self.dir.parent() {
            let _ = std::fs::create_dir_all(state);
        }
        let _ = write_atomically(&self.dir.with_extension("cursor"), name.to_string().as_bytes(), false);
    }

    /// The segment recovery asked for last, if recorded.
    pub fn cursor(&self) -> Option<WalFileName> {
        let text = std::fs::read_to_string(self.dir.with_extension("cursor")).ok()?;
        WalFileName::parse(text.trim()).ok()
    }

    /// Asks the prefetch worker to stop (at promotion); it looks between downloads.
    pub fn request_stop(&self) {
        let _ = std::fs::write(self.dir.with_extension("stop"), b"");
    }

    /// Withdraws a stop request.
    pub fn clear_stop(&self) {
        let _ = std::fs::remove_file(self.dir.with_extension("stop"));
    }

    /// Whether [`Spool::request_stop`] was called since the spool was last removed.
    pub fn stop_requested(&self) -> bool {
        self.dir.with_extension("stop").exists()
    }

    /// Removes the whole spool (at promotion), with the files entries were served through. A
    /// spool that does not exist is fine.
    pub fn remove_all(&self) -> Result<bool, ArchiveError> {
        if let Some(Ok(entries)) = self.dir.parent().map(std::fs::read_dir) {
            let serving = format!("{PREFETCH_DIR}.serving-");
            for e in entries.flatten() {
                let name = e.file_name();
                let done = name.to_str().is_some_and(|n| {
                    n.starts_with(&serving)
                        || n == format!("{PREFETCH_DIR}.cursor")
                        || n == format!("{PREFETCH_DIR}.stop")
                });
                if done {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
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

/// The suffix of this process's temporary files in the spool.
fn own_tmp_suffix() -> String {
    format!(".pgvault-{}.tmp", std::process::id())
}

/// Why [`Spool::take_into`] served nothing from an entry it found.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The trailer of `name`'s entry with body `plain`.
fn trailer(name: &WalFileName, plain: &[u8]) -> Vec<u8> {
    let text = format!("{MAGIC} {name} {} {}", plain.len(), blake3::hash(plain).to_hex());
    let mut t = format!("{text:<width$}\n", width = TRAILER - 1).into_bytes();
    t.truncate(TRAILER);
    t
}

/// Checks the claimed entry `claimed` (hashing it as it is read), cuts it to its body and
/// renames it onto `dest`; returns the body's first [`HEAD`] bytes.
fn finish_take(name: &WalFileName, claimed: &Path, dest: &Path) -> Result<Vec<u8>, TakeError> {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(claimed)?;
    let total = f.metadata()?.len();
    let body_len = total.checked_sub(TRAILER as u64).ok_or(Rejected::BadHeader)?;
    let mut hasher = blake3::Hasher::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = body_len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        f.read_exact(&mut buf[..want])?;
        hasher.update(&buf[..want]);
        if head.len() < HEAD {
            let more = (HEAD - head.len()).min(want);
            head.extend_from_slice(&buf[..more]);
        }
        left -= want as u64;
    }
    let mut t = [0u8; TRAILER];
    f.read_exact(&mut t)?;
    let (len, sha) = parse_trailer(name, &t)?;
    if len != body_len || sha != hasher.finalize().to_hex().as_str() {
        return Err(Rejected::BadContent.into());
    }
    f.set_len(body_len)?;
    drop(f);
    if let Err(e) = std::fs::rename(claimed, dest) {
        // Not the same file system after all: copy the checked body.
        if e.raw_os_error() != Some(nix::libc::EXDEV) {
            return Err(e.into());
        }
        let body = std::fs::read(claimed)?;
        write_atomically(dest, &body, false).map_err(|e| std::io::Error::other(e.to_string()))?;
        let _ = std::fs::remove_file(claimed);
    }
    Ok(head)
}

/// The length and BLAKE3 hash (hex) a trailer gives, if it is one for `name`.
fn parse_trailer(name: &WalFileName, t: &[u8]) -> Result<(u64, String), Rejected> {
    if t.len() != TRAILER || t[TRAILER - 1] != b'\n' {
        return Err(Rejected::BadHeader);
    }
    let text = std::str::from_utf8(&t[..TRAILER - 1]).map_err(|_| Rejected::BadHeader)?;
    let rest = text.strip_prefix(MAGIC).ok_or(Rejected::BadHeader)?;
    let mut words = rest.split_whitespace();
    let (Some(n), Some(len), Some(sha), None) = (words.next(), words.next(), words.next(), words.next()) else {
        return Err(Rejected::BadHeader);
    };
    if n != name.to_string() {
        return Err(Rejected::BadHeader);
    }
    let len = len.parse().map_err(|_| Rejected::BadHeader)?;
    Ok((len, sha.to_string()))
}

/// Checks a spool entry against the name it is served as; returns the body's length.
fn check_entry(name: &WalFileName, raw: &[u8]) -> Result<usize, Rejected> {
    let body = raw.len().checked_sub(TRAILER).ok_or(Rejected::BadHeader)?;
    let (len, sha) = parse_trailer(name, &raw[body..])?;
    if len != body as u64 || blake3::hash(&raw[..body]).to_hex().as_str() != sha {
        return Err(Rejected::BadContent);
    }
    Ok(body)
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
