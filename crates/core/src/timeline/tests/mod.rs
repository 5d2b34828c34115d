//! Unit and property tests of the archive model over synthetic archives: a linear history and a
//! branched one (timeline 1 -> 2 inside segment 5, 1 -> 3 on the boundary of segment 8,
//! 2 -> 4 inside segment 10), gaps, `.partial` files, backups carrying their WAL, clock edges,
//! and 16 MiB and 64 MiB segments.

mod choose_tests;
mod history_tests;
mod model_tests;
mod prop_tests;

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::lsn::{Lsn, TimelineId};
use crate::timeline::{ArchiveModel, BackupPoint, SegmentTimes, TimelineTree};
use crate::wal::{WalFileName, WalKind};

pub(super) const MB16: u64 = 16 << 20;
pub(super) const MB64: u64 = 64 << 20;

pub(super) fn lsn(s: &str) -> Lsn {
    s.parse().expect("test LSN")
}

/// Minute `m` of a fixed day.
pub(super) fn at(m: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
        .single()
        .expect("fixed date")
        + Duration::minutes(m)
}

pub(super) fn seg(tli: TimelineId, segno: u64) -> WalFileName {
    WalFileName::from_segment_number(tli, segno, MB16)
}

pub(super) fn segs(tli: TimelineId, range: std::ops::RangeInclusive<u64>) -> Vec<WalFileName> {
    range.map(|s| seg(tli, s)).collect()
}

pub(super) fn partial(tli: TimelineId, segno: u64) -> WalFileName {
    WalFileName {
        kind: WalKind::Partial,
        ..seg(tli, segno)
    }
}

pub(super) fn backup(
    id: &str,
    tli: TimelineId,
    start: &str,
    stop: &str,
    minute: i64,
    wal_included: bool,
) -> BackupPoint {
    BackupPoint {
        id: id.into(),
        start_tli: tli,
        start_lsn: lsn(start),
        stop_tli: tli,
        stop_lsn: lsn(stop),
        stop_time: at(minute),
        wal_included,
    }
}

/// 1 -> 2 at 0/5800000, 1 -> 3 at 0/8000000, 2 -> 4 at 0/A800000.
pub(super) fn branched_tree() -> TimelineTree {
    TimelineTree::from_files([
        (2, &b"1\t0/5800000\tbefore 2026-11-23 00:10:00+00\n"[..]),
        (3, &b"1\t0/8000000\tno recovery target specified\n"[..]),
        (
            4,
            &b"1\t0/5800000\tbefore 2026-11-23 00:10:00+00\n\n2\t0/A800000\tat restore point \"x\"\n"[..],
        ),
    ])
    .expect("valid histories")
}

pub(super) fn model(
    tree: TimelineTree,
    segments: Vec<WalFileName>,
    backups: Vec<BackupPoint>,
    times: HashMap<WalFileName, SegmentTimes>,
) -> ArchiveModel {
    ArchiveModel::new(MB16, tree, segments, backups, times).expect("valid model")
}

/// Times where segment `n` (of each listed timeline) holds commits from minute `10 n` to `10 n + 9`.
pub(super) fn ten_minutes_per_segment(names: &[WalFileName]) -> HashMap<WalFileName, SegmentTimes> {
    names
        .iter()
        .map(|n| {
            let m = 10 * n.segment_number(MB16) as i64;
            (
                *n,
                SegmentTimes {
                    first_commit: Some(at(m)),
                    last_commit: Some(at(m + 9)),
                    restore_points: vec![],
                },
            )
        })
        .collect()
}
