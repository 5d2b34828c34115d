//! Incremental backups (PostgreSQL 17+): choosing the parent, and reading incremental files.
//!
//! With `BASE_BACKUP (INCREMENTAL)` the server sends, for each relation segment that changed
//! little since the parent, a file named `INCREMENTAL.<name>` holding only the changed blocks.
//! Its layout (PostgreSQL's `basebackup_incremental.c`, the same on 17 and 18), all integers
//! 4 bytes in the server's byte order (little-endian on every platform pgvault supports):
//! magic `0xd3ae1f0d`, block count `n`, `truncation_block_length`, `n` block numbers, zero
//! padding up to a multiple of 8192 bytes when `n > 0` (PostgreSQL 17.0 and later), then the
//! `n` blocks. pgvault stores these bytes unchanged (compressed and encrypted like every file)
//! and records the parsed header in the catalog ([`IncrementalInfo`]), parsed here as the file
//! streams through ([`HeaderTap`]), never buffered whole.

use std::io::Read;

use serde::Deserialize;

use crate::format::Compression;
use crate::repository::catalog::{BackupKind, IncrementalInfo};
use crate::repository::objects::ObjectSealing;
use crate::repository::summary::BackupSummary;

/// PostgreSQL's block size: pgvault supports only the default build.
pub const BLCKSZ: u64 = 8192;
/// Blocks per relation segment file (1 GiB / 8 KiB).
pub const RELSEG_SIZE: u32 = 131_072;
/// `INCREMENTAL_MAGIC` from PostgreSQL.
pub const INCREMENTAL_MAGIC: u32 = 0xd3ae_1f0d;
/// The name prefix the server gives incremental files.
pub const PREFIX: &str = "INCREMENTAL.";

/// What `backup` does when an incremental backup cannot be taken (`[backup] incremental_fallback`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncrementalFallback {
    /// Take a full backup instead, and say why in the log.
    #[default]
    Full,
    /// Fail the backup.
    Fail,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IncrementalError {
    #[error("{path}: not an incremental file ({why})")]
    BadHeader { path: String, why: String },
}

/// The stored path of an incremental file with its prefix dropped: `base/5/INCREMENTAL.16384`
/// → `base/5/16384`. `None` for an ordinary file.
pub fn strip_prefix(path: &str) -> Option<String> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, path),
    };
    let rest = name.strip_prefix(PREFIX)?;
    Some(match dir {
        Some(d) => format!("{d}/{rest}"),
        None => rest.to_string(),
    })
}

/// Whether a file of this path is an incremental file.
pub fn is_incremental_path(path: &str) -> bool {
    strip_prefix(path).is_some()
}

/// The header size PostgreSQL writes for `n` blocks (padded to a block when `n > 0`).
pub fn padded_header_len(n: u32) -> u64 {
    let raw = 12 + 4 * n as u64;
    if n > 0 && raw % BLCKSZ != 0 {
        raw + BLCKSZ - raw % BLCKSZ
    } else {
        raw
    }
}

/// Parses a complete header (`bytes` holds at least the header) of a file of `file_size` bytes.
pub fn parse_header(path: &str, bytes: &[u8], file_size: u64) -> Result<IncrementalInfo, IncrementalError> {
    let bad = |why: String| IncrementalError::BadHeader {
        path: path.to_string(),
        why,
    };
    let word = |i: usize| -> Result<u32, IncrementalError> {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad(format!("{} bytes are too short for its header", bytes.len())))
    };
    let magic = word(0)?;
    if magic != INCREMENTAL_MAGIC {
        return Err(bad(format!("magic {magic:#010x}")));
    }
    let n = word(1)?;
    let truncation_block_length = word(2)?;
    if n > RELSEG_SIZE || truncation_block_length > RELSEG_SIZE {
        return Err(bad(format!(
            "{n} blocks, truncation length {truncation_block_length}: more than a segment"
        )));
    }
    let blocks = (0..n as usize).map(|i| word(3 + i)).collect::<Result<Vec<_>, _>>()?;
    if let Some(b) = blocks.iter().find(|b| **b >= RELSEG_SIZE) {
        return Err(bad(format!("block number {b} is past a segment")));
    }
    let data = n as u64 * BLCKSZ;
    let header_len = file_size
        .checked_sub(data)
        .ok_or_else(|| bad(format!("{file_size} bytes cannot hold {n} blocks")))?;
    if header_len != padded_header_len(n) && header_len != 12 + 4 * n as u64 {
        return Err(bad(format!("{file_size} bytes do not fit a header for {n} blocks")));
    }
    Ok(IncrementalInfo {
        truncation_block_length,
        blocks,
        header_len,
    })
}

/// A reader that passes a file's bytes through unchanged and keeps the first bytes, up to the
/// end of an incremental file's header (at most 12 + 4 × 131072 bytes).
pub struct HeaderTap<'a, R: Read> {
    inner: R,
    head: &'a mut Vec<u8>,
    want: usize,
}

impl<'a, R: Read> HeaderTap<'a, R> {
    pub fn new(inner: R, head: &'a mut Vec<u8>) -> Self {
        head.clear();
        HeaderTap { inner, head, want: 12 }
    }
}

impl<R: Read> Read for HeaderTap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.head.len() < self.want {
            let take = (self.want - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
            if self.head.len() >= 8 && self.want == 12 {
                let count = u32::from_le_bytes([self.head[4], self.head[5], self.head[6], self.head[7]]);
                self.want = 12 + 4 * count.min(RELSEG_SIZE) as usize;
                let more = (self.want - self.head.len()).min(n - take);
                self.head.extend_from_slice(&buf[take..take + more]);
            }
        }
        Ok(n)
    }
}

/// Why no parent could be used (the fallback's message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoParent {
    NoBackups,
    NoFull,
    OtherCluster(String),
}

impl std::fmt::Display for NoParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoParent::NoBackups => f.write_str("the repository holds no backup to be incremental to"),
            NoParent::NoFull => f.write_str("the repository holds no full backup to be differential to"),
            NoParent::OtherCluster(id) => write!(f, "the newest backup {id} is of another PostgreSQL major version"),
        }
    }
}

/// The parent of a new backup of `kind`: the newest backup (`incr`) or the newest full backup
/// (`diff`). `backups` is oldest first.
pub fn choose_parent(kind: BackupKind, backups: &[BackupSummary], pg_version_num: u32) -> Result<String, NoParent> {
    let candidate = match kind {
        BackupKind::Full => return Err(NoParent::NoBackups),
        BackupKind::Incr => backups.last().ok_or(NoParent::NoBackups)?,
        BackupKind::Diff => backups
            .iter()
            .rev()
            .find(|b| b.kind == BackupKind::Full)
            .ok_or(NoParent::NoFull)?,
    };
    if candidate.pg_version_num / 10000 != pg_version_num / 10000 {
        return Err(NoParent::OtherCluster(candidate.id.clone()));
    }
    Ok(candidate.id.clone())
}

/// Removes the `INCREMENTAL FROM …` lines of a `backup_label` (what `pg_combinebackup` does):
/// the combined result is a full backup.
pub fn strip_label(label: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len());
    for line in label.split_inclusive(|b| *b == b'\n') {
        if !line.starts_with(b"INCREMENTAL FROM ") {
            out.extend_from_slice(line);
        }
    }
    out
}

/// The lowest zstd level the bundles of an incremental or differential backup are compressed at.
///
/// An incremental backup is made of changed blocks (new tuple versions, B-tree pages), which
/// compress less well than a full backup's mostly unchanged data, and it is small, so a higher
/// level costs little time. Measured on the benchmark's changed blocks (docs/INCREMENTAL.md,
/// 114 MB of them): level 6 on two workers with 1 MiB jobs (the full backup's settings) stored
/// 4.19 MB in 0.27 s; level 9 on one thread 4.00 MB (-4.5%) in 0.46 s. Cutting the stream into
/// 1 MiB jobs costs ratio (each job starts with little history) and, from level 9 up, time (each
/// job re-reads its overlap), so one thread at level 9 beats two workers at any level up to 12.
/// The big gains start at level 16 (-11%), at 3.7 s: too slow for a backup.
pub const INCREMENTAL_ZSTD_LEVEL: i32 = 9;

/// How the bundles of an incremental or differential backup are sealed: as configured, with a
/// zstd level below [`INCREMENTAL_ZSTD_LEVEL`] raised to it and then compressed on the packing
/// thread (no zstd workers, see [`INCREMENTAL_ZSTD_LEVEL`]). A level at or above it is kept with
/// its workers, as are negative ("fast") levels, chosen for speed, and no compression. Readers
/// need no change: neither the level nor the workers are part of the stored format.
pub fn incremental_sealing(mut sealing: ObjectSealing) -> ObjectSealing {
    let codec = &mut sealing.codec;
    if codec.compression == Compression::Zstd && (1..INCREMENTAL_ZSTD_LEVEL).contains(&codec.zstd_level) {
        codec.zstd_level = INCREMENTAL_ZSTD_LEVEL;
        codec.zstd_workers = 0;
    }
    sealing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(blocks: &[u32], trunc: u32, padded: bool) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [INCREMENTAL_MAGIC, blocks.len() as u32, trunc] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        for b in blocks {
            v.extend_from_slice(&b.to_le_bytes());
        }
        if padded {
            v.resize(padded_header_len(blocks.len() as u32) as usize, 0);
        }
        for b in blocks {
            v.extend(std::iter::repeat_n(*b as u8, BLCKSZ as usize));
        }
        v
    }

    #[test]
    fn parses_padded_and_unpadded_headers() {
        for padded in [true, false] {
            let bytes = file(&[3, 7, 9], 12, padded);
            let info = parse_header("base/5/INCREMENTAL.1", &bytes, bytes.len() as u64).unwrap();
            assert_eq!(info.blocks, vec![3, 7, 9]);
            assert_eq!(info.truncation_block_length, 12);
            assert_eq!(info.header_len, if padded { 8192 } else { 24 });
        }
        let empty = file(&[], 0, true);
        let info = parse_header("x", &empty, empty.len() as u64).unwrap();
        assert_eq!((info.blocks.len(), info.header_len), (0, 12));
    }

    #[test]
    fn refuses_bad_headers() {
        let mut bytes = file(&[1], 2, true);
        assert!(parse_header("x", &bytes, bytes.len() as u64 - 1).is_err());
        bytes[0] ^= 1;
        assert!(parse_header("x", &bytes, bytes.len() as u64).is_err());
        let huge = file(&[RELSEG_SIZE], 2, true);
        assert!(parse_header("x", &huge, huge.len() as u64).is_err());
        assert!(parse_header("x", &[1, 2], 2).is_err());
    }

    #[test]
    fn the_tap_keeps_exactly_the_header_whatever_the_read_sizes() {
        let bytes = file(&[1, 2, 3, 4, 5], 9, true);
        for step in [1usize, 5, 13, 100, 100_000] {
            let mut head = Vec::new();
            let mut out = Vec::new();
            {
                let mut tap = HeaderTap::new(&bytes[..], &mut head);
                let mut buf = vec![0u8; step];
                loop {
                    let n = tap.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
            assert_eq!(out, bytes);
            assert_eq!(head.len(), 12 + 5 * 4, "step {step}");
            let info = parse_header("x", &head, bytes.len() as u64).unwrap();
            assert_eq!(info.blocks, vec![1, 2, 3, 4, 5]);
        }
    }

    #[test]
    fn prefixes_and_labels() {
        assert_eq!(
            strip_prefix("base/5/INCREMENTAL.16384").as_deref(),
            Some("base/5/16384")
        );
        assert_eq!(strip_prefix("INCREMENTAL.x").as_deref(), Some("x"));
        assert_eq!(strip_prefix("base/5/16384"), None);
        let label = b"START WAL LOCATION: 0/2\nINCREMENTAL FROM LSN: 0/1\nINCREMENTAL FROM TLI: 1\nLABEL: x\n";
        assert_eq!(strip_label(label), b"START WAL LOCATION: 0/2\nLABEL: x\n".to_vec());
    }

    #[test]
    fn incremental_bundles_use_at_least_the_incremental_level() {
        let sealing = |compression, zstd_level| ObjectSealing {
            codec: crate::format::Codec {
                compression,
                zstd_level,
                zstd_workers: 2,
                ..Default::default()
            },
            key: None,
            repository_id: "r".into(),
            write_version: 2,
        };
        let level = |s: ObjectSealing| (s.codec.compression, s.codec.zstd_level, s.codec.zstd_workers);
        assert_eq!(
            level(incremental_sealing(sealing(Compression::Zstd, 3))),
            (Compression::Zstd, INCREMENTAL_ZSTD_LEVEL, 0),
            "raised, and on one thread"
        );
        assert_eq!(
            level(incremental_sealing(sealing(Compression::Zstd, 12))),
            (Compression::Zstd, 12, 2),
            "a higher level is kept with its workers"
        );
        assert_eq!(
            level(incremental_sealing(sealing(Compression::Zstd, -5))),
            (Compression::Zstd, -5, 2),
            "a fast level is a choice for speed"
        );
        assert_eq!(
            level(incremental_sealing(sealing(Compression::None, 3))),
            (Compression::None, 3, 2)
        );
    }
}
