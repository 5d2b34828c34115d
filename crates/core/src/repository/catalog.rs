//! The backup catalog: everything needed to restore one base backup and to prove it intact.
//!
//! A catalog is written (sealed like every object) only after every bundle of its backup and
//! the WAL that makes it consistent are stored, so "the catalog exists" and "the backup is
//! complete" are the same statement. It records where every byte of every file lives (bundle,
//! offset, length) with a SHA-256 per piece, the LSN and time range of the backup, and the
//! tablespaces; `docs/FORMAT.md` documents the fields.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lsn::{Lsn, TimelineId};
use crate::repository::meta::u64_string;

pub const CATALOG_VERSION: u32 = 1;
/// The catalog version of incremental backups (`kind` `incr`/`diff`, files with an
/// `incremental` entry). Version-1 readers refuse them by their unknown `kind`.
pub const CATALOG_VERSION_INCREMENTAL: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupCatalog {
    pub catalog_version: u32,
    /// `YYYYMMDD-HHMMSSF` (UTC start time; `F` = full).
    pub id: String,
    pub label: String,
    pub kind: BackupKind,
    pub pgvault_version: String,
    #[serde(with = "u64_string")]
    pub system_identifier: u64,
    pub pg_version_num: u32,
    pub timeline: TimelineId,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub stop_timeline: TimelineId,
    /// First and last WAL segment needed to make the backup consistent.
    pub start_wal: String,
    pub stop_wal: String,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    /// The WAL from `start_wal` to `stop_wal` is inside the backup (`pg_wal/`).
    pub wal_included: bool,
    /// `pg_current_snapshot()` taken right after the backup stopped (`xmin:xmax:xip,…`); used to
    /// tell whether a transaction-id target lies after this backup.
    pub snapshot_after_stop: Option<String>,
    /// Sum of the sizes of all files.
    pub size: u64,
    /// Bytes stored for the bundles (compressed and encrypted).
    pub stored_size: u64,
    pub compression: String,
    pub encrypted: bool,
    /// Owner of the cluster's files on the source host (restores run as root chown to it).
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
    pub tablespaces: Vec<TablespaceEntry>,
    pub bundles: Vec<BundleEntry>,
    pub directories: Vec<DirEntry>,
    pub symlinks: Vec<LinkEntry>,
    pub files: Vec<FileEntry>,
    /// SHA-256 of PostgreSQL's `backup_manifest` as stored next to the catalog.
    pub manifest_sha256: Option<String>,
    /// The backup this one depends on (incremental backups, later); `None` for a full backup.
    /// Retention never expires a backup that a kept backup depends on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    /// Incremental relative to the newest backup before it (`I`).
    Incr,
    /// Differential: incremental relative to the newest full backup (`D`).
    Diff,
}

impl BackupKind {
    /// The letter ending the backup id.
    pub fn letter(self) -> char {
        match self {
            BackupKind::Full => 'F',
            BackupKind::Incr => 'I',
            BackupKind::Diff => 'D',
        }
    }

    pub fn is_incremental(self) -> bool {
        !matches!(self, BackupKind::Full)
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupKind::Full => "full",
            BackupKind::Incr => "incr",
            BackupKind::Diff => "diff",
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TablespaceEntry {
    pub oid: u32,
    /// Location on the source host.
    pub location: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleEntry {
    pub id: u32,
    /// Plaintext bytes (file data) in the bundle.
    pub size: u64,
    /// Bytes of the stored object.
    pub stored_size: u64,
}

/// Paths are relative to the data directory; files of tablespace `oid` are under
/// `pg_tblspc/<oid>/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirEntry {
    pub path: String,
    pub mode: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkEntry {
    pub path: String,
    pub target: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Where the file's bytes are; empty for an empty file. Pieces are in file order.
    pub pieces: Vec<Piece>,
    /// For an incremental file (`INCREMENTAL.` name prefix, PostgreSQL 17+): its header. The
    /// stored bytes are PostgreSQL's incremental file unchanged (header, then the blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalInfo>,
}

/// The header of one incremental file, as PostgreSQL wrote it (see docs/INCREMENTAL.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalInfo {
    /// The relation segment's length in blocks: blocks at or past it in older backups are gone.
    pub truncation_block_length: u32,
    /// Block numbers (relative to the segment) of the blocks stored, in file order.
    pub blocks: Vec<u32>,
    /// Bytes before the first block (header and padding).
    pub header_len: u64,
}

/// A contiguous run of a file's bytes stored in one bundle.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Piece {
    pub bundle: u32,
    /// Offset in the bundle's plaintext.
    pub bundle_offset: u64,
    /// Offset in the file.
    pub file_offset: u64,
    pub len: u64,
    /// SHA-256 of these bytes.
    pub sha256: String,
}

impl BackupCatalog {
    /// The point from which this backup is consistent: restore targets must not be earlier.
    pub fn consistent_lsn(&self) -> Lsn {
        self.stop_lsn
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

/// Backup ids sort by time: `YYYYMMDD-HHMMSSF`.
pub fn backup_id(start: DateTime<Utc>) -> String {
    backup_id_of(start, BackupKind::Full)
}

/// The id of a backup of `kind` started at `start`: `YYYYMMDD-HHMMSS` and the kind's letter.
pub fn backup_id_of(start: DateTime<Utc>, kind: BackupKind) -> String {
    format!("{}{}", start.format("%Y%m%d-%H%M%S"), kind.letter())
}

/// Whether `s` has the shape of a backup id (guards paths built from user input).
pub fn is_backup_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15].is_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_time_and_validate() {
        let a = backup_id(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        let b = backup_id(Utc.with_ymd_and_hms(2026, 11, 2, 3, 4, 5).unwrap());
        assert_eq!(a, "20260102-030405F");
        assert!(a < b);
        assert!(is_backup_id(&a));
        for bad in ["", "latest", "../../etc", "20260102-030405", "20260102x030405F"] {
            assert!(!is_backup_id(bad), "{bad}");
        }
    }
}
