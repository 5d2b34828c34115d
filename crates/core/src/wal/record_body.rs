//! Inside one WAL record: the block-header walk (`DecodeXLogRecord`) reduced to finding the
//! main data, and the few record kinds the segment summary reads (commit and abort times,
//! restore points, timeline switches). Kept apart from the page walk in `records` because this
//! is the part that follows PostgreSQL's record formats, rmgr by rmgr and version by version.

use super::records::{pg_timestamp, u16_at, u32_at, u64_at, RECORD_HEADER};
use super::{RestorePointRecord, TimelineSwitch, WalSummary};
use crate::lsn::Lsn;

pub(super) const RM_XLOG_ID: u8 = 0;
pub(super) const RM_XACT_ID: u8 = 1;
const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
pub(super) const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_END_OF_RECOVERY: u8 = 0x90;
const XLOG_XACT_OPMASK: u8 = 0x70;
/// COMMIT, ABORT, COMMIT_PREPARED, ABORT_PREPARED: all start with `TimestampTz xact_time`.
const XACT_TIMED_OPS: [u8; 4] = [0x00, 0x20, 0x30, 0x40];

/// The record kinds whose body the summary reads.
pub(super) fn decoded(rmid: u8, info: u8) -> bool {
    match rmid {
        RM_XACT_ID => XACT_TIMED_OPS.contains(&(info & XLOG_XACT_OPMASK)),
        RM_XLOG_ID => matches!(
            info & 0xF0,
            XLOG_RESTORE_POINT | XLOG_END_OF_RECOVERY | XLOG_CHECKPOINT_SHUTDOWN
        ),
        _ => false,
    }
}

/// Folds a CRC-checked `RM_XLOG_ID` or `RM_XACT_ID` record into the summary.
pub(super) fn note_record(rec: &[u8], lsn: Lsn, major: u32, summary: &mut WalSummary) {
    let (rmid, info) = (rec[17], rec[16] & 0xF0);
    let Some(main) = main_data(rec, major) else {
        return;
    };
    if rmid == RM_XACT_ID && XACT_TIMED_OPS.contains(&(rec[16] & XLOG_XACT_OPMASK)) {
        if let Some(t) = u64_at(main, 0).and_then(|us| pg_timestamp(us as i64)) {
            summary.first_commit = Some(summary.first_commit.map_or(t, |f| f.min(t)));
            summary.last_commit = Some(summary.last_commit.map_or(t, |l| l.max(t)));
        }
        return;
    }
    if rmid != RM_XLOG_ID {
        return;
    }
    match info {
        XLOG_RESTORE_POINT if main.len() >= 72 => {
            let Some(time) = u64_at(main, 0).and_then(|us| pg_timestamp(us as i64)) else {
                return;
            };
            let raw = &main[8..72];
            let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            let name = String::from_utf8_lossy(raw).into_owned();
            summary.restore_points.push(RestorePointRecord { name, lsn, time });
        }
        XLOG_END_OF_RECOVERY | XLOG_CHECKPOINT_SHUTDOWN if main.len() >= 16 => {
            let (to, from) = (u32_at(main, 8).unwrap_or(0), u32_at(main, 12).unwrap_or(0));
            if to != from && summary.timeline_switch.is_none() {
                summary.timeline_switch = Some(TimelineSwitch { from, to, lsn });
            }
        }
        _ => {}
    }
}

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;

/// Whether a block image carries a compression header (`BKPIMAGE_COMPRESSED`): the flag bits
/// moved in PostgreSQL 15 (PGLZ/LZ4/ZSTD), before that one `BKPIMAGE_IS_COMPRESSED` bit.
fn image_compressed(bimg_info: u8, major: u32) -> bool {
    let mask = if major >= 15 || major == 0 {
        0x04 | 0x08 | 0x10
    } else {
        0x02
    };
    bimg_info & mask != 0
}

/// The record's main data (last in the record), found by walking the block headers as
/// `DecodeXLogRecord` does; `None` if the headers do not add up to the record length.
pub(super) fn main_data(rec: &[u8], major: u32) -> Option<&[u8]> {
    let body = rec.get(RECORD_HEADER..)?;
    let mut i = 0usize;
    let mut data_total = 0usize;
    let mut main_len = 0usize;
    let mut last_block: Option<u8> = None;
    let mut have_rel = false;
    while body.len() - i > data_total {
        let id = *body.get(i)?;
        i += 1;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = usize::from(*body.get(i)?);
                i += 1;
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u32_at(body, i)? as usize;
                i += 4;
                data_total = data_total.checked_add(main_len)?;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => i += 2,
            XLR_BLOCK_ID_TOPLEVEL_XID => i += 4,
            0..=XLR_MAX_BLOCK_ID => {
                if last_block.is_some_and(|b| id <= b) {
                    return None;
                }
                last_block = Some(id);
                let fork_flags = *body.get(i)?;
                data_total += usize::from(u16_at(body, i + 1)?);
                i += 3;
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let bimg_len = usize::from(u16_at(body, i)?);
                    let bimg_info = *body.get(i + 4)?;
                    i += 5;
                    if image_compressed(bimg_info, major) && bimg_info & BKPIMAGE_HAS_HOLE != 0 {
                        i += 2;
                    }
                    data_total += bimg_len;
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    i += 12;
                    have_rel = true;
                } else if !have_rel {
                    return None;
                }
                i += 4;
            }
            _ => return None,
        }
        if i > body.len() {
            return None;
        }
    }
    if i > body.len() || body.len() - i != data_total {
        return None;
    }
    body.get(body.len() - main_len..)
}
