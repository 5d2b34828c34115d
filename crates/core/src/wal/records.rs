//! What a WAL segment holds, read from its records: the commit and abort times and the restore
//! points PostgreSQL's recovery targets are compared against.
//!
//! `recovery_target_time` and `recovery_target_name` are judged by the server against the records
//! it replays, so pgvault must pick a backup and check a target with the same facts, not with
//! object modification times (which `copy` resets) or the pgvault host's clock. `push` calls
//! [`summarize_segment`] once per segment, on PostgreSQL's archiving hot path: the walk reads the
//! page and record headers only, checks each record's CRC, decodes the body of the few record
//! kinds that matter, never fails (odd content ends the walk and clears
//! [`WalSummary::complete`]), and allocates nothing proportional to the segment: CRCs are
//! computed over a record's pieces in place, and only the decoded kinds (commits, aborts,
//! restore points, end of recovery: a record each, not pages of data) are copied when they span
//! pages.
//!
//! Layouts follow PostgreSQL 15 to 18 (`access/xlog_internal.h`, `access/xlogrecord.h`,
//! `xlogreader.c`); they did not change across these versions except the `BKPIMAGE_*` flags,
//! which changed in 15 (older majors are read with the 14 layout).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record_body::{decoded, note_record, RM_XLOG_ID, XLOG_SWITCH};
use super::{page_magic_for_major, WalFileName};
use crate::lsn::{Lsn, TimelineId};

/// A `pg_create_restore_point()` record: the name `recovery_target_name` matches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RestorePointRecord {
    pub name: String,
    /// Where the record starts (recovery stops after it).
    pub lsn: Lsn,
    /// The server's clock when the restore point was created.
    pub time: DateTime<Utc>,
}

/// A record that starts a timeline (end of recovery): the first segment of a new timeline begins
/// with pages copied from its parent, which carry the parent's timeline id.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSwitch {
    pub from: TimelineId,
    pub to: TimelineId,
    pub lsn: Lsn,
}

/// What [`summarize_segment`] found in one segment; stored with the segment as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct WalSummary {
    /// Earliest commit or abort time in the segment (the times `recovery_target_time` is
    /// compared with; records are in LSN order, which is almost but not exactly time order).
    pub first_commit: Option<DateTime<Utc>>,
    /// Latest commit or abort time in the segment.
    pub last_commit: Option<DateTime<Utc>>,
    pub restore_points: Vec<RestorePointRecord>,
    /// Records that start in this segment and passed their CRC check.
    pub records: u64,
    /// `false` if the walk stopped before the end of written WAL (damaged or unexpected content);
    /// what was read before that point is still reported.
    pub complete: bool,
    /// End of the last record read (its last byte + 1).
    pub last_record_end: Option<Lsn>,
    /// An end-of-recovery record (or end-of-recovery checkpoint) that starts a new timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline_switch: Option<TimelineSwitch>,
    /// Why the walk stopped early, for logs (only when `complete` is `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
pub(super) const RECORD_HEADER: usize = 24;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const XLP_ALL_FLAGS: u16 = 0x000F;
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00 UTC).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

pub(super) fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?))
}
pub(super) fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?))
}
pub(super) fn u64_at(d: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?))
}
fn align8(x: usize) -> usize {
    (x + 7) & !7
}

/// A PostgreSQL `TimestampTz` (microseconds since 2000-01-01 UTC) as a UTC time.
pub fn pg_timestamp(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_UNIX_MICROS)?)
}

/// Why a walk ended.
enum Stop {
    /// End of written WAL: zeroed space, a switch record, the end of the file, a record that
    /// continues into the next segment.
    End,
    /// Content that is not valid WAL where WAL was expected.
    Broken(String),
}

struct PageHeader {
    info: u16,
    rem_len: u32,
    len: usize,
}

struct Walker<'a> {
    data: &'a [u8],
    block_size: usize,
    seg_start: u64,
    magic: u16,
    max_tli: TimelineId,
    page_tli: TimelineId,
    major: u32,
    /// The current record's bytes, one `(start, len)` per page it touches.
    pieces: Vec<(usize, usize)>,
    /// Reassembly of a record that spans pages, only for the few kinds decoded.
    buf: Vec<u8>,
    /// `(xl_rmid, xl_info)` of a record that runs off the end of the segment.
    open_record: Option<(u8, u8)>,
}

/// Walks the records of one segment (or `.partial` file) and reports commit times, restore points
/// and timeline switches. Never fails: see [`WalSummary::complete`].
pub fn summarize_segment(name: &WalFileName, data: &[u8], segment_size: u64, major: u32) -> WalSummary {
    summarize_with_tail(name, data, segment_size, major).0
}

/// [`summarize_segment`], plus `(xl_rmid, xl_info)` of a record whose header is in this segment
/// and whose body continues in the next (its CRC cannot be checked here).
pub(super) fn summarize_with_tail(
    name: &WalFileName,
    data: &[u8],
    segment_size: u64,
    major: u32,
) -> (WalSummary, Option<(u8, u8)>) {
    let mut summary = WalSummary::default();
    let (end, tail) = match start(name, data, segment_size, major) {
        Ok(mut w) => (w.walk(name, &mut summary), w.open_record),
        Err(stop) => (stop, None),
    };
    match end {
        Stop::End => summary.complete = true,
        Stop::Broken(why) => summary.stopped = Some(why),
    }
    (summary, tail)
}

/// Checks the first page's long header and sets up the walk.
fn start<'a>(name: &WalFileName, data: &'a [u8], segment_size: u64, major: u32) -> Result<Walker<'a>, Stop> {
    let broken = |s: String| Stop::Broken(s);
    if !name.has_page_header() {
        return Err(broken(format!("{name} is not a WAL segment")));
    }
    let seg_len = usize::try_from(segment_size).map_err(|_| broken("segment size too large".into()))?;
    let data = &data[..data.len().min(seg_len)];
    if data.len() < LONG_PAGE_HEADER {
        return Err(broken(format!("{} bytes, shorter than a long page header", data.len())));
    }
    let magic = u16_at(data, 0).unwrap_or(0);
    if page_magic_for_major(major).is_some_and(|m| m != magic) {
        return Err(broken(format!("page magic {magic:#06X} is not PostgreSQL {major}'s")));
    }
    let seg_size = u32_at(data, 32).unwrap_or(0);
    let block_size = u32_at(data, 36).unwrap_or(0) as usize;
    if u64::from(seg_size) != segment_size {
        return Err(broken(format!(
            "long header says segment size {seg_size}, expected {segment_size}"
        )));
    }
    if !block_size.is_power_of_two() || !(1024..=65536).contains(&block_size) || seg_len % block_size != 0 {
        return Err(broken(format!("long header has an invalid block size {block_size}")));
    }
    Ok(Walker {
        data,
        block_size,
        seg_start: name.start_lsn(segment_size).0,
        magic,
        max_tli: name.timeline,
        page_tli: 0,
        major,
        pieces: Vec::new(),
        buf: Vec::new(),
        open_record: None,
    })
}

impl Walker<'_> {
    fn lsn(&self, pos: usize) -> Lsn {
        Lsn(self.seg_start + pos as u64)
    }

    /// Validates the page header at `pos` (a multiple of the block size).
    fn page(&mut self, pos: usize) -> Result<PageHeader, Stop> {
        let d = self.data;
        let Some(h) = d.get(pos..pos + SHORT_PAGE_HEADER) else {
            return Err(Stop::End);
        };
        if h.iter().all(|&b| b == 0) {
            return Err(Stop::End);
        }
        let at = self.lsn(pos);
        let (magic, info) = (u16_at(h, 0).unwrap_or(0), u16_at(h, 2).unwrap_or(0));
        let (tli, addr, rem_len) = (
            u32_at(h, 4).unwrap_or(0),
            u64_at(h, 8).unwrap_or(0),
            u32_at(h, 16).unwrap_or(0),
        );
        if addr < at.0 && magic == self.magic && pos > 0 {
            // A recycled file's stale page after the end of written WAL.
            return Err(Stop::End);
        }
        if magic != self.magic || addr != at.0 || info & !XLP_ALL_FLAGS != 0 {
            return Err(Stop::Broken(format!("invalid page header at {at}")));
        }
        if (info & XLP_LONG_HEADER != 0) != (pos == 0) {
            return Err(Stop::Broken(format!("misplaced long page header flag at {at}")));
        }
        if tli < self.page_tli || tli > self.max_tli || tli == 0 {
            return Err(Stop::Broken(format!(
                "page at {at} has timeline {tli}, out of sequence"
            )));
        }
        self.page_tli = tli;
        let len = if pos == 0 { LONG_PAGE_HEADER } else { SHORT_PAGE_HEADER };
        Ok(PageHeader { info, rem_len, len })
    }

    /// The header of a page that must continue a record: the end of the file ends the walk
    /// normally (the record continues in the next segment), an empty or stale page there does
    /// not (the record was cut short).
    fn continuation_page(&mut self, page: usize) -> Result<PageHeader, Stop> {
        if page >= self.data.len() {
            return Err(Stop::End);
        }
        match self.page(page) {
            Err(Stop::End) => Err(Stop::Broken(format!(
                "a record is cut short by an empty page at {}",
                self.lsn(page)
            ))),
            other => other,
        }
    }

    /// Skips the tail of a record that began in the previous segment; returns the position of
    /// the first record that starts here.
    fn skip_continuation(&mut self, first: &PageHeader) -> Result<usize, Stop> {
        let mut rem = first.rem_len as usize;
        let mut pos = first.len;
        loop {
            let avail = self.block_size - pos % self.block_size;
            if rem <= avail {
                return Ok(align8(pos + rem));
            }
            rem -= avail;
            let page = pos + avail;
            let h = self.continuation_page(page)?;
            if h.info & XLP_FIRST_IS_CONTRECORD == 0 || h.rem_len as usize != rem {
                return Err(Stop::Broken(format!(
                    "continuation record broken at {}",
                    self.lsn(page)
                )));
            }
            pos = page + h.len;
        }
    }

    fn walk(&mut self, name: &WalFileName, summary: &mut WalSummary) -> Stop {
        let first = match self.page(0) {
            Ok(h) => h,
            Err(Stop::End) => return Stop::Broken(format!("{name}: the first page header is empty")),
            Err(e) => return e,
        };
        let mut pos = if first.info & XLP_FIRST_IS_CONTRECORD != 0 {
            match self.skip_continuation(&first) {
                Ok(p) => p,
                Err(e) => return e,
            }
        } else {
            first.len
        };
        let mut prev: Option<u64> = None;
        loop {
            match self.next_record(pos, &mut prev, summary) {
                Ok(next) => pos = next,
                Err(e) => return e,
            }
        }
    }

    /// Reads, checks and records the record at `pos`; returns where the next one starts.
    fn next_record(&mut self, mut pos: usize, prev: &mut Option<u64>, summary: &mut WalSummary) -> Result<usize, Stop> {
        if pos % self.block_size == 0 {
            let h = self.page(pos)?;
            if h.info & XLP_FIRST_IS_CONTRECORD != 0 {
                return Err(Stop::Broken(format!(
                    "unexpected continuation record at {}",
                    self.lsn(pos)
                )));
            }
            pos += h.len;
        }
        let tot_len = match u32_at(self.data, pos) {
            None | Some(0) => return Err(Stop::End),
            Some(n) => n as usize,
        };
        let lsn = self.lsn(pos);
        if tot_len < RECORD_HEADER {
            return Err(Stop::Broken(format!("invalid record length {tot_len} at {lsn}")));
        }
        let (end, overwritten) = match self.gather(pos, tot_len, *prev) {
            Err(Stop::End) => {
                // The record continues in the next segment: keep what kind it is.
                if self.pieces.iter().map(|p| p.1).sum::<usize>() >= RECORD_HEADER {
                    let h = self.header();
                    self.open_record = Some((h[17], h[16]));
                }
                return Err(Stop::End);
            }
            other => other?,
        };
        if let Some(resume) = overwritten {
            // The record was abandoned (PostgreSQL 15+ overwrites a torn contrecord): resume at
            // the page's first record, whose xl_prev names the abandoned record.
            *prev = None;
            return Ok(resume);
        }
        let header = self.header();
        check_header(&header, lsn, *prev)?;
        if self.crc(&header) != u32_at(&header, 20).unwrap_or(0) {
            return Err(Stop::Broken(format!("record at {lsn} fails its CRC check")));
        }
        *prev = Some(lsn.0);
        summary.records += 1;
        summary.last_record_end = Some(self.lsn(end));
        let (rmid, info) = (header[17], header[16] & 0xF0);
        if decoded(rmid, header[16]) {
            let (data, major) = (self.data, self.major);
            let rec: &[u8] = match self.pieces[..] {
                [(start, len)] => &data[start..start + len],
                _ => {
                    self.buf.clear();
                    for &(start, len) in &self.pieces {
                        self.buf.extend_from_slice(&data[start..start + len]);
                    }
                    &self.buf
                }
            };
            note_record(rec, lsn, major, summary);
        }
        if rmid == RM_XLOG_ID && info == XLOG_SWITCH {
            return Err(Stop::End);
        }
        Ok(align8(end))
    }

    /// Finds the pieces of the record at `pos` (one per page it touches) in `self.pieces`,
    /// checking the continuation page headers. Returns the end position, and a resume position
    /// if the record was abandoned and overwritten.
    fn gather(&mut self, pos: usize, tot_len: usize, prev: Option<u64>) -> Result<(usize, Option<usize>), Stop> {
        self.pieces.clear();
        let avail = self.block_size - pos % self.block_size;
        let on_page = avail.min(tot_len).min(self.data.len().saturating_sub(pos));
        self.pieces.push((pos, on_page));
        if on_page == tot_len {
            return Ok((pos + tot_len, None));
        }
        if on_page >= RECORD_HEADER {
            // Reject garbage before following pages for it.
            check_header(&self.header(), self.lsn(pos), prev)?;
        }
        let mut have = on_page;
        let mut page = pos + avail;
        loop {
            let rem = tot_len - have;
            let h = self.continuation_page(page)?;
            if h.info & XLP_FIRST_IS_CONTRECORD == 0 {
                if h.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    return Ok((page, Some(page + h.len)));
                }
                return Err(Stop::Broken(format!(
                    "record at {} lacks its continuation",
                    self.lsn(pos)
                )));
            }
            if h.rem_len as usize != rem {
                return Err(Stop::Broken(format!(
                    "continuation length mismatch at {}",
                    self.lsn(page)
                )));
            }
            let start = page + h.len;
            let chunk = rem.min(self.block_size - h.len);
            if start + chunk > self.data.len() {
                return Err(Stop::End);
            }
            self.pieces.push((start, chunk));
            have += chunk;
            if have >= RECORD_HEADER && have - chunk < RECORD_HEADER {
                check_header(&self.header(), self.lsn(pos), prev)?;
            }
            if have == tot_len {
                return Ok((start + chunk, None));
            }
            page += self.block_size;
        }
    }

    /// The record header (`XLogRecord`), which may itself be split across pages.
    fn header(&self) -> [u8; RECORD_HEADER] {
        let mut h = [0u8; RECORD_HEADER];
        let mut n = 0;
        for &(start, len) in &self.pieces {
            let take = len.min(RECORD_HEADER - n);
            h[n..n + take].copy_from_slice(&self.data[start..start + take]);
            n += take;
            if n == RECORD_HEADER {
                break;
            }
        }
        h
    }

    /// CRC32C over the record after its header, then the header up to `xl_crc`
    /// (`ValidXLogRecord`), computed piece by piece without copying the record.
    fn crc(&self, header: &[u8; RECORD_HEADER]) -> u32 {
        let mut crc = 0;
        let mut skip = RECORD_HEADER;
        for &(start, len) in &self.pieces {
            let k = skip.min(len);
            skip -= k;
            crc = crc32c::crc32c_append(crc, &self.data[start + k..start + len]);
        }
        crc32c::crc32c_append(crc, &header[..20])
    }
}

/// `xl_prev` must chain to the previous record (or point backwards for the first one).
fn check_header(rec: &[u8], lsn: Lsn, prev: Option<u64>) -> Result<(), Stop> {
    let xl_prev = u64_at(rec, 8).unwrap_or(u64::MAX);
    let ok = match prev {
        Some(p) => xl_prev == p,
        None => xl_prev < lsn.0,
    };
    if ok {
        Ok(())
    } else {
        Err(Stop::Broken(format!(
            "record at {lsn} has xl_prev {}, out of chain",
            Lsn(xl_prev)
        )))
    }
}
