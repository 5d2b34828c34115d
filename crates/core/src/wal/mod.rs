//! WAL file names, WAL page headers, and what archived WAL files hold.
//!
//! `archive_command` hands us a path and nothing else; everything pgvault knows about the file
//! comes from its name (timeline, log and segment number, or a `.history`, `.backup` or
//! `.partial` suffix) and from its content: the long page header at the start of every segment
//! carries the cluster's system identifier, the segment size and the timeline. Checking both
//! before storing anything is what keeps a foreign cluster's WAL (a copy-pasted
//! `archive_command`, a restored clone still archiving, a renamed file) out of a repository.
//!
//! - [`records`]: the records of a segment (commit times, restore points, timeline switches), so
//!   recovery targets can be checked with the server's clock.
//! - [`backup_file`]: backup history files (`.backup`).

use std::fmt;

use crate::lsn::{Lsn, TimelineId};

pub mod backup_file;
mod record_body;
pub mod records;
#[cfg(test)]
mod tests_proptest;
#[cfg(test)]
mod tests_real;

pub use backup_file::{check_backup_file, parse_backup_file, BackupFileInfo, ServerTime};
pub use records::{summarize_segment, RestorePointRecord, TimelineSwitch, WalSummary};

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("'{0}' is not a WAL file name PostgreSQL archives (a 24-hex-digit segment, TTTTTTTT.history, a .backup or a .partial file)")]
    BadName(String),
    #[error("{name}: {detail}: this is not a WAL segment of this repository's cluster; check that archive_command and the repository belong to the same cluster")]
    Foreign { name: String, detail: String },
    #[error("{name}: file is {len} bytes, shorter than a WAL page header; the file is truncated or not WAL")]
    TooShort { name: String, len: usize },
    #[error("backup history file: {detail}")]
    BadBackupFile { detail: String },
    #[error("{name}: {detail}: the backup history file does not match its name")]
    BackupFileMismatch { name: String, detail: String },
}

/// The kinds of file PostgreSQL's archiver hands to `archive_command`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalKind {
    Segment,
    Partial,
    /// Backup history file `<segment>.<offset>.backup`.
    Backup {
        offset: u32,
    },
    History,
}

/// A parsed WAL archive file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalFileName {
    pub timeline: TimelineId,
    /// The `log` and `seg` halves of a segment name (zero for history files).
    pub log: u32,
    pub seg: u32,
    pub kind: WalKind,
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl WalFileName {
    /// Parses a bare file name (no directory).
    pub fn parse(name: &str) -> Result<WalFileName, WalError> {
        let bad = || WalError::BadName(name.to_string());
        if let Some(tli) = name.strip_suffix(".history") {
            let timeline = hex8(tli).ok_or_else(bad)?;
            return Ok(WalFileName {
                timeline,
                log: 0,
                seg: 0,
                kind: WalKind::History,
            });
        }
        let (base, kind) = if let Some(base) = name.strip_suffix(".partial") {
            (base, WalKind::Partial)
        } else if let Some(rest) = name.strip_suffix(".backup") {
            let (base, offset) = rest.split_once('.').ok_or_else(bad)?;
            (
                base,
                WalKind::Backup {
                    offset: hex8(offset).ok_or_else(bad)?,
                },
            )
        } else {
            (name, WalKind::Segment)
        };
        if base.len() != 24 {
            return Err(bad());
        }
        let timeline = hex8(&base[0..8]).ok_or_else(bad)?;
        let log = hex8(&base[8..16]).ok_or_else(bad)?;
        let seg = hex8(&base[16..24]).ok_or_else(bad)?;
        if timeline == 0 {
            return Err(bad());
        }
        Ok(WalFileName {
            timeline,
            log,
            seg,
            kind,
        })
    }

    /// The segment holding `lsn` on `timeline`.
    pub fn segment_for(timeline: TimelineId, lsn: Lsn, segment_size: u64) -> WalFileName {
        Self::from_segment_number(timeline, lsn.segment(segment_size), segment_size)
    }

    /// The segment with absolute number `segno` (PostgreSQL's `XLogSegNo`).
    pub fn from_segment_number(timeline: TimelineId, segno: u64, segment_size: u64) -> WalFileName {
        let per_log = segments_per_log(segment_size);
        WalFileName {
            timeline,
            log: (segno / per_log) as u32,
            seg: (segno % per_log) as u32,
            kind: WalKind::Segment,
        }
    }

    /// Absolute segment number (meaningless for history files).
    pub fn segment_number(&self, segment_size: u64) -> u64 {
        u64::from(self.log) * segments_per_log(segment_size) + u64::from(self.seg)
    }

    /// LSN of the first byte of this segment.
    pub fn start_lsn(&self, segment_size: u64) -> Lsn {
        Lsn(self.segment_number(segment_size) * segment_size)
    }

    /// The 24-character segment part of the name.
    pub fn segment_name(&self) -> String {
        format!("{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }

    /// Files whose content starts with WAL pages (and can be checked against the cluster).
    pub fn has_page_header(&self) -> bool {
        matches!(self.kind, WalKind::Segment | WalKind::Partial)
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            WalKind::History => write!(f, "{:08X}.history", self.timeline),
            WalKind::Segment => f.write_str(&self.segment_name()),
            WalKind::Partial => write!(f, "{}.partial", self.segment_name()),
            WalKind::Backup { offset } => {
                write!(f, "{}.{:08X}.backup", self.segment_name(), offset)
            }
        }
    }
}

/// Stored as its file name (`000000010000000000000002`, `00000002.history`).
impl serde::Serialize for WalFileName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for WalFileName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WalFileName::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn segments_per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// `XLOG_PAGE_MAGIC` of each supported major version: a segment written by another major version
/// cannot belong to this repository's cluster.
pub fn page_magic_for_major(major: u32) -> Option<u16> {
    match major {
        15 => Some(0xD110),
        16 => Some(0xD113),
        17 => Some(0xD116),
        18 => Some(0xD118),
        _ => None,
    }
}

const XLP_LONG_HEADER: u16 = 0x0002;
const LONG_HEADER_LEN: usize = 40;

/// What a segment's first (long) page header says about its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub magic: u16,
    pub timeline: TimelineId,
    pub page_address: Lsn,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

/// Reads the long page header at the start of a segment (`XLogLongPageHeaderData`).
pub fn read_segment_header(name: &WalFileName, data: &[u8]) -> Result<SegmentHeader, WalError> {
    if data.len() < LONG_HEADER_LEN {
        return Err(WalError::TooShort {
            name: name.to_string(),
            len: data.len(),
        });
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let info = u16_at(2);
    if info & XLP_LONG_HEADER == 0 {
        return Err(WalError::Foreign {
            name: name.to_string(),
            detail: "the first page has no long header".into(),
        });
    }
    Ok(SegmentHeader {
        magic: u16_at(0),
        timeline: u32_at(4),
        page_address: Lsn(u64_at(8)),
        system_identifier: u64_at(24),
        segment_size: u32_at(32),
        block_size: u32_at(36),
    })
}

/// Checks that a segment (or `.partial`) file belongs to the cluster with this identity and holds
/// the segment its name says. The one segment check: push, fetch and copy all use it (copy,
/// which streams, through [`check_segment_header`] when it only has the first bytes).
pub fn check_segment(
    name: &WalFileName,
    data: &[u8],
    system_identifier: u64,
    segment_size: u64,
    major: u32,
) -> Result<(), WalError> {
    let h = check_segment_header(name, data, data.len() as u64, system_identifier, segment_size, major)?;
    if h.timeline != name.timeline && !starts_timeline(name, data, segment_size, major) {
        return Err(WalError::Foreign {
            name: name.to_string(),
            detail: format!(
                "its pages are from timeline {} and it holds no switch to timeline {} (a segment \
                 of another timeline under this name?)",
                h.timeline, name.timeline
            ),
        });
    }
    Ok(())
}

/// The checks that need only the long page header (`head`, at least its 40 bytes) and the file
/// length. A header timeline older than the name's is returned, not refused: the first segment
/// of a new timeline starts with its parent's pages, and only its content
/// ([`check_segment`]) can tell that segment from a renamed one.
pub fn check_segment_header(
    name: &WalFileName,
    head: &[u8],
    len: u64,
    system_identifier: u64,
    segment_size: u64,
    major: u32,
) -> Result<SegmentHeader, WalError> {
    let h = read_segment_header(name, head)?;
    let foreign = |detail: String| {
        Err(WalError::Foreign {
            name: name.to_string(),
            detail,
        })
    };
    if h.system_identifier != system_identifier {
        return foreign(format!(
            "its system identifier is {}, the repository's cluster is {}",
            h.system_identifier, system_identifier
        ));
    }
    if u64::from(h.segment_size) != segment_size {
        return foreign(format!(
            "its segment size is {} bytes, the repository's is {}",
            h.segment_size, segment_size
        ));
    }
    if let Some(magic) = page_magic_for_major(major) {
        if h.magic != magic {
            return foreign(format!(
                "its page magic {:#06X} is not PostgreSQL {}'s ({:#06X})",
                h.magic, major, magic
            ));
        }
    }
    if h.page_address != name.start_lsn(segment_size) {
        return foreign(format!(
            "it holds the segment starting at {}, not {} (a renamed file?)",
            h.page_address,
            name.start_lsn(segment_size)
        ));
    }
    if h.timeline == 0 || h.timeline > name.timeline {
        return foreign(format!(
            "its pages are from timeline {}, its name says timeline {} (a renamed file?)",
            h.timeline, name.timeline
        ));
    }
    if len != segment_size {
        return foreign(format!("it is {len} bytes long, a segment is {segment_size} bytes"));
    }
    Ok(h)
}

/// Whether a segment whose first page is from an older timeline really is the first segment of
/// `name`'s timeline: a later page written on that timeline, or the end-of-recovery record (or
/// end-of-recovery checkpoint) that started it.
fn starts_timeline(name: &WalFileName, data: &[u8], segment_size: u64, major: u32) -> bool {
    let block = data
        .get(36..40)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if block.is_power_of_two() && block >= 1024 {
        let start = name.start_lsn(segment_size).0;
        let page_on_timeline = (block..data.len()).step_by(block).any(|p| {
            let h = &data[p..data.len().min(p + 16)];
            h.len() == 16
                && h[0..2] == data[0..2]
                && h[4..8] == name.timeline.to_le_bytes()
                && h[8..16] == (start + p as u64).to_le_bytes()
        });
        if page_on_timeline {
            return true;
        }
    }
    // The record that starts the timeline is the first one after the switch point; when that
    // point is within a record's length of the segment's end, only its header is here.
    let (summary, tail) = records::summarize_with_tail(name, data, segment_size, major);
    summary.timeline_switch.is_some_and(|s| s.to == name.timeline)
        || (summary.complete
            && summary.timeline_switch.is_none()
            && tail.is_some_and(|(rmid, info)| rmid == 0 && matches!(info & 0xF0, 0x00 | 0x90)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 * 1024 * 1024;

    #[test]
    fn parses_every_archived_kind() {
        let s = WalFileName::parse("000000010000000200000003").unwrap();
        assert_eq!((s.timeline, s.log, s.seg, s.kind), (1, 2, 3, WalKind::Segment));
        assert_eq!(s.to_string(), "000000010000000200000003");
        let h = WalFileName::parse("0000000A.history").unwrap();
        assert_eq!((h.timeline, h.kind), (10, WalKind::History));
        assert_eq!(h.to_string(), "0000000A.history");
        let b = WalFileName::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(b.kind, WalKind::Backup { offset: 0x28 });
        assert_eq!(b.to_string(), "000000010000000000000002.00000028.backup");
        let p = WalFileName::parse("000000020000000000000005.partial").unwrap();
        assert_eq!(p.kind, WalKind::Partial);
        assert_eq!(p.to_string(), "000000020000000000000005.partial");
    }

    #[test]
    fn rejects_foreign_names() {
        for n in [
            "",
            "00000001000000000000000",
            "0000000100000000000000001",
            "000000010000000000000001.gz",
            "00000001000000000000000g",
            "000000010000000000000001.backup",
            "0000001.history",
            "000000000000000000000001",
            "../000000010000000000000001",
            "archive_status",
        ] {
            assert!(WalFileName::parse(n).is_err(), "{n:?} should be refused");
        }
    }

    #[test]
    fn segment_numbers_follow_postgres() {
        let lsn: Lsn = "1/2000028".parse().unwrap();
        let s = WalFileName::segment_for(1, lsn, SEG);
        assert_eq!(s.to_string(), "000000010000000100000002");
        assert_eq!(s.start_lsn(SEG), "1/2000000".parse().unwrap());
        let s64 = WalFileName::segment_for(3, "0/FFFFFFF".parse().unwrap(), 64 * 1024 * 1024);
        assert_eq!(s64.to_string(), "000000030000000000000003");
        assert_eq!(
            WalFileName::from_segment_number(1, 256, SEG).to_string(),
            "000000010000000100000000"
        );
    }

    fn header(sysid: u64, magic: u16, addr: u64, seg: u32) -> Vec<u8> {
        let mut d = vec![0u8; SEG as usize];
        d[0..2].copy_from_slice(&magic.to_le_bytes());
        d[2..4].copy_from_slice(&(XLP_LONG_HEADER | 0x0004).to_le_bytes());
        d[4..8].copy_from_slice(&1u32.to_le_bytes());
        d[8..16].copy_from_slice(&addr.to_le_bytes());
        d[24..32].copy_from_slice(&sysid.to_le_bytes());
        d[32..36].copy_from_slice(&seg.to_le_bytes());
        d[36..40].copy_from_slice(&8192u32.to_le_bytes());
        d
    }

    #[test]
    fn segment_checks() {
        let name = WalFileName::parse("000000010000000000000003").unwrap();
        let good = header(42, 0xD110, 3 * SEG, SEG as u32);
        check_segment(&name, &good, 42, SEG, 15).unwrap();
        assert!(matches!(
            check_segment(&name, &good, 43, SEG, 15),
            Err(WalError::Foreign { .. })
        ));
        assert!(matches!(
            check_segment(&name, &good, 42, SEG, 16),
            Err(WalError::Foreign { .. })
        ));
        let renamed = WalFileName::parse("000000010000000000000004").unwrap();
        assert!(matches!(
            check_segment(&renamed, &good, 42, SEG, 15),
            Err(WalError::Foreign { .. })
        ));
        assert!(matches!(
            check_segment(&name, &good[..10], 42, SEG, 15),
            Err(WalError::TooShort { .. })
        ));
        assert!(matches!(
            check_segment(&name, &good[..8192], 42, SEG, 15),
            Err(WalError::Foreign { .. })
        ));
    }
}
