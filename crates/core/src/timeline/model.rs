//! The archive as recovery sees it: which file PostgreSQL reads for each segment number along a
//! timeline, the exact run of segments a restore will read, the gaps, and the windows that are
//! really recoverable.
//!
//! Rules encoded here, from PostgreSQL's `xlogrecovery.c`:
//! - `XLogFileReadAnyTLI` tries the timelines of the target's history newest first and skips
//!   those that begin after the segment: segment `n` is read from the newest timeline on the path
//!   whose begin segment is `<= n` ([`ArchiveModel::expected_segment`]). When that file is absent
//!   PostgreSQL may fall back to an older timeline's file of the same number, but that file holds
//!   the parent's WAL past the switch point; the model counts the expected file as missing.
//! - `.partial` files (the old timeline's last segment at a promotion) are never requested by
//!   recovery; they are kept for display only.
//! - Recovery replays from the backup's redo point (`start_lsn`). When the backup carries its own
//!   WAL (`wal_included`) everything up to the consistent point (`stop_lsn`) is in `pg_wal`, but
//!   the copy of the segment holding `stop_lsn` ends where the backup ended: replaying past the
//!   consistent point needs the archive from that segment on. A segment is archived only when
//!   complete, so a contiguous run ends at a segment boundary ("reachable end"; WAL after a
//!   `pg_switch_wal()` may end earlier inside the last segment).
//! - A time target stops at the first commit or abort after it (`recoveryStopsBefore`); a
//!   target that no later commit in the run reaches makes PostgreSQL fail at the end of WAL.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::lsn::{Lsn, TimelineId};
use crate::repository::BackupCatalog;
use crate::timeline::history::{TimelineSpan, TimelineTree};
use crate::wal::{WalFileName, WalKind};

/// Inputs the model cannot work with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("WAL segment size {0} bytes is not a power of two between 1 MiB and 1 GiB")]
    BadSegmentSize(u64),
}

/// What the model needs of one backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPoint {
    pub id: String,
    pub start_tli: TimelineId,
    /// The redo point recovery starts replaying from.
    pub start_lsn: Lsn,
    pub stop_tli: TimelineId,
    /// The consistent point.
    pub stop_lsn: Lsn,
    /// The server's time at the backup's end.
    pub stop_time: DateTime<Utc>,
    /// The WAL from `start_lsn` to `stop_lsn` is inside the backup.
    pub wal_included: bool,
}

impl BackupPoint {
    pub fn from_catalog(c: &BackupCatalog) -> BackupPoint {
        BackupPoint {
            id: c.id.clone(),
            start_tli: c.timeline,
            start_lsn: c.start_lsn,
            stop_tli: c.stop_timeline,
            stop_lsn: c.stop_lsn,
            stop_time: c.stop_time,
            wal_included: c.wal_included,
        }
    }

    /// The first segment number recovery asks the archive for, and cannot do without.
    pub fn first_archive_segno(&self, segment_size: u64) -> u64 {
        if self.wal_included {
            self.stop_lsn.segment(segment_size)
        } else {
            self.start_lsn.segment(segment_size)
        }
    }
}

/// A named restore point (`pg_create_restore_point`) recorded when its segment was pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePoint {
    pub name: String,
    pub lsn: Lsn,
    pub time: DateTime<Utc>,
}

/// What push recorded about one segment's content, from the server's own timestamps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentTimes {
    pub first_commit: Option<DateTime<Utc>>,
    pub last_commit: Option<DateTime<Utc>>,
    pub restore_points: Vec<RestorePoint>,
}

/// A restore point found on a timeline's path, with the segment holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundRestorePoint {
    pub point: RestorePoint,
    pub segment: WalFileName,
}

/// The segments recovery will read for one (backup, timeline, end), in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    pub backup: String,
    pub target_tli: TimelineId,
    /// The timelines recovery follows, from the backup's timeline to the target's.
    pub timeline_path: Vec<TimelineId>,
    /// The target's whole history, from timeline 1.
    pub spans: Vec<TimelineSpan>,
    /// False when the target has neither a history file nor a descendant's that lists it.
    pub ancestry_known: bool,
    /// The target (not 1) has no history file: PostgreSQL refuses such a numeric target.
    pub target_history_missing: bool,
    /// The backup's start and consistent point are both on the target's history.
    pub backup_on_path: bool,
    pub consistent_lsn: Lsn,
    pub consistent_time: DateTime<Utc>,
    /// All WAL up to the consistent point is available (inside the backup or archived).
    pub reaches_consistency: bool,
    /// The archived segments recovery reads, in increasing segment order.
    pub segments: Vec<WalFileName>,
    /// The first segment recovery needs (up to the end asked for; with no end, up to the newest
    /// segment archived on the path) that the archive lacks.
    pub first_missing: Option<WalFileName>,
    /// Segments on the path exist beyond `first_missing`: it is a gap, not the archive's end.
    pub gap_ahead: bool,
    /// End of the contiguous WAL read (a segment boundary; the consistent point if nothing is
    /// read past it).
    pub reachable_end: Lsn,
    /// Last commit known in the contiguous run (at least the backup's stop time); `None` when a
    /// segment past the consistent point has no recorded times.
    pub reachable_end_time: Option<DateTime<Utc>>,
    pub segment_size: u64,
}

impl RecoveryPlan {
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes fetched from the archive (whole segments).
    pub fn bytes(&self) -> u64 {
        self.segments.len() as u64 * self.segment_size
    }

    /// Whether the record starting at `lsn` is inside the WAL this plan reads.
    pub fn reaches(&self, lsn: Lsn) -> bool {
        self.backup_on_path && self.reaches_consistency && lsn < self.reachable_end
    }
}

/// The archive: timelines, archived segments, backups and per-segment times.
#[derive(Clone, Debug)]
pub struct ArchiveModel {
    pub(crate) segment_size: u64,
    pub(crate) tree: TimelineTree,
    pub(super) archived: BTreeMap<TimelineId, BTreeSet<u64>>,
    partials: BTreeSet<WalFileName>,
    ignored: Vec<WalFileName>,
    /// Oldest consistent point first.
    pub(crate) backups: Vec<BackupPoint>,
    pub(super) times: HashMap<WalFileName, SegmentTimes>,
    /// Holes recorded on purpose, with why (see [`DeclaredGap`]).
    declared: Vec<DeclaredGap>,
}

/// A run of segments known to be missing on purpose (the archiver dropped them), with the text
/// that says why: gaps that overlap it carry that reason into `list`, `verify` and `restore`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredGap {
    pub first: WalFileName,
    pub last: WalFileName,
    pub reason: String,
}

impl ArchiveModel {
    /// `segments` may hold any archived names: segments and `.partial` files are kept, others
    /// (history, `.backup`) are ignored, as are names whose segment part is out of range for
    /// `segment_size` (see [`ArchiveModel::ignored`]).
    pub fn new(
        segment_size: u64,
        mut tree: TimelineTree,
        segments: impl IntoIterator<Item = WalFileName>,
        mut backups: Vec<BackupPoint>,
        times: HashMap<WalFileName, SegmentTimes>,
    ) -> Result<ArchiveModel, ModelError> {
        if !segment_size.is_power_of_two() || !((1 << 20)..=(1 << 30)).contains(&segment_size) {
            return Err(ModelError::BadSegmentSize(segment_size));
        }
        let per_log = 0x1_0000_0000 / segment_size;
        let mut archived: BTreeMap<TimelineId, BTreeSet<u64>> = BTreeMap::new();
        let mut partials = BTreeSet::new();
        let mut ignored = Vec::new();
        for name in segments {
            let in_range = u64::from(name.seg) < per_log;
            match name.kind {
                WalKind::Segment if in_range => {
                    tree.note_timeline(name.timeline);
                    archived
                        .entry(name.timeline)
                        .or_default()
                        .insert(name.segment_number(segment_size));
                }
                WalKind::Partial if in_range => {
                    partials.insert(name);
                }
                WalKind::Segment | WalKind::Partial => ignored.push(name),
                WalKind::History | WalKind::Backup { .. } => {}
            }
        }
        for b in &backups {
            tree.note_timeline(b.start_tli);
            tree.note_timeline(b.stop_tli);
        }
        backups.sort_by(|a, b| (a.stop_lsn, a.stop_time, &a.id).cmp(&(b.stop_lsn, b.stop_time, &b.id)));
        Ok(ArchiveModel {
            segment_size,
            tree,
            archived,
            partials,
            ignored,
            backups,
            times,
            declared: Vec::new(),
        })
    }

    /// Attaches the reasons of holes recorded on purpose (the repository's gap markers).
    pub fn set_declared_gaps(&mut self, declared: Vec<DeclaredGap>) {
        self.declared = declared;
    }

    /// Why segment `name` is missing, when a declared gap covers it.
    pub fn missing_reason(&self, name: &WalFileName) -> Option<&str> {
        self.declared
            .iter()
            .find(|d| d.first.timeline == name.timeline && d.first <= *name && *name <= d.last)
            .map(|d| d.reason.as_str())
    }

    /// Why the run `first..=last` of one timeline is missing: the reasons of the declared gaps
    /// that overlap it, joined.
    pub fn gap_reason(&self, first: &WalFileName, last: &WalFileName) -> Option<String> {
        let reasons: Vec<&str> = self
            .declared
            .iter()
            .filter(|d| d.first.timeline == first.timeline && d.first <= *last && *first <= d.last)
            .map(|d| d.reason.as_str())
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    pub fn tree(&self) -> &TimelineTree {
        &self.tree
    }

    /// Backups, oldest consistent point first.
    pub fn backups(&self) -> &[BackupPoint] {
        &self.backups
    }

    /// `.partial` files: shown, never read by recovery.
    pub fn partials(&self) -> impl Iterator<Item = &WalFileName> {
        self.partials.iter()
    }

    /// Segment names that cannot exist with this segment size.
    pub fn ignored(&self) -> &[WalFileName] {
        &self.ignored
    }

    /// Whether this exact segment (not a `.partial`) is archived.
    pub fn is_archived(&self, name: &WalFileName) -> bool {
        name.kind == WalKind::Segment
            && self
                .archived
                .get(&name.timeline)
                .is_some_and(|s| s.contains(&name.segment_number(self.segment_size)))
    }

    fn has(&self, tli: TimelineId, segno: u64) -> bool {
        self.archived.get(&tli).is_some_and(|s| s.contains(&segno))
    }

    pub(super) fn name(&self, tli: TimelineId, segno: u64) -> WalFileName {
        WalFileName::from_segment_number(tli, segno, self.segment_size)
    }

    /// The file recovery reads for segment `segno` when following `target_tli`.
    pub fn expected_segment(&self, target_tli: TimelineId, segno: u64) -> WalFileName {
        let (spans, _) = self.tree.path_or_root(target_tli);
        self.name(expected_tli(&spans, segno, self.segment_size), segno)
    }

    /// The newest segment number whose expected file along `spans` is archived.
    fn newest_expected(&self, spans: &[TimelineSpan]) -> Option<u64> {
        spans
            .iter()
            .filter_map(|span| {
                let set = self.archived.get(&span.tli)?;
                set.iter()
                    .rev()
                    .find(|&&s| expected_tli(spans, s, self.segment_size) == span.tli)
                    .copied()
            })
            .max()
    }

    /// The segments that make `b` consistent (its redo point to its stop point), along the
    /// history of its stop timeline: what a backup waits for in the archive, including a
    /// timeline switch during the backup, and what one without its WAL needs kept.
    pub fn consistency_segments(&self, b: &BackupPoint) -> Vec<WalFileName> {
        let ss = self.segment_size;
        let (spans, _) = self.tree.path_or_root(b.stop_tli);
        let last = Lsn(b.stop_lsn.0.saturating_sub(1)).segment(ss);
        (b.start_lsn.segment(ss)..=last)
            .map(|n| self.name(expected_tli(&spans, n, ss), n))
            .collect()
    }

    /// The earliest commit recorded in a segment recovery along `target_tli` would read after
    /// segment number `after` (used to tell that a time target lies beyond a gap).
    pub fn earliest_commit_after(&self, target_tli: TimelineId, after: u64) -> Option<DateTime<Utc>> {
        let ss = self.segment_size;
        self.times
            .iter()
            .filter(|(seg, _)| {
                let n = seg.segment_number(ss);
                n > after && self.is_archived(seg) && self.expected_segment(target_tli, n) == **seg
            })
            .filter_map(|(_, t)| t.first_commit)
            .min()
    }

    /// Whether both ends of `b` lie on the history of `target_tli`.
    pub fn backup_on_path(&self, b: &BackupPoint, target_tli: TimelineId) -> bool {
        self.tree.contains(target_tli, b.start_tli, b.start_lsn)
            && self.tree.contains_end(target_tli, b.stop_tli, b.stop_lsn)
    }

    /// The exact ordered segments recovery reads from `backup` along `target_tli`, up to the
    /// record at `until` (inclusive) or, with `None`, as far as the archive goes.
    pub fn plan_recovery(&self, backup: &BackupPoint, target_tli: TimelineId, until: Option<Lsn>) -> RecoveryPlan {
        let ss = self.segment_size;
        let (spans, ancestry_known) = self.tree.path_or_root(target_tli);
        let on_path = self.backup_on_path(backup, target_tli);
        let start_index = spans.iter().position(|s| s.tli == backup.start_tli).unwrap_or(0);
        let mut plan = RecoveryPlan {
            backup: backup.id.clone(),
            target_tli,
            timeline_path: spans[start_index..].iter().map(|s| s.tli).collect(),
            spans: spans.clone(),
            ancestry_known,
            target_history_missing: target_tli != 1 && !self.tree.has_history(target_tli),
            backup_on_path: on_path,
            consistent_lsn: backup.stop_lsn,
            consistent_time: backup.stop_time,
            reaches_consistency: false,
            segments: Vec::new(),
            first_missing: None,
            gap_ahead: false,
            reachable_end: Lsn::INVALID,
            reachable_end_time: None,
            segment_size: ss,
        };
        if !on_path {
            return plan;
        }
        let first = backup.first_archive_segno(ss);
        // The last segment holding WAL before the consistent point.
        let consistency_last = Lsn(backup.stop_lsn.0.saturating_sub(1)).segment(ss);
        let newest = self.newest_expected(&spans);
        // Recovery reads at least to the consistent point, whatever end is asked for.
        let last = until.map(|u| {
            if backup.wal_included {
                u.segment(ss)
            } else {
                u.segment(ss).max(consistency_last)
            }
        });
        let mut next = first;
        loop {
            if last.is_some_and(|l| next > l) {
                break;
            }
            let tli = expected_tli(&spans, next, ss);
            if self.has(tli, next) {
                plan.segments.push(self.name(tli, next));
                next += 1;
                continue;
            }
            let gap_ahead = newest.is_some_and(|n| n > next);
            let needed = until.is_some() || gap_ahead || (!backup.wal_included && next <= consistency_last);
            if needed {
                plan.first_missing = Some(self.name(tli, next));
                plan.gap_ahead = gap_ahead;
            }
            break;
        }
        plan.reaches_consistency = backup.wal_included || next > consistency_last;
        let floor = if backup.wal_included {
            backup.stop_lsn
        } else {
            Lsn(first.saturating_mul(ss))
        };
        plan.reachable_end = floor.max(Lsn(next.saturating_mul(ss)));
        if plan.reaches_consistency {
            plan.reachable_end_time = self.run_end_time(backup, &plan.segments);
        }
        plan
    }

    /// The last commit time in `segments` from the backup's stop on, if every such segment has
    /// recorded times.
    fn run_end_time(&self, backup: &BackupPoint, segments: &[WalFileName]) -> Option<DateTime<Utc>> {
        let from = backup.stop_lsn.segment(self.segment_size);
        let mut end = backup.stop_time;
        for seg in segments.iter().filter(|s| s.segment_number(self.segment_size) >= from) {
            let times = self.times.get(seg)?;
            if let Some(t) = times.last_commit {
                end = end.max(t);
            }
        }
        Some(end)
    }

    /// Cuts `plan` after the segment holding the first commit later than `t` past the consistent
    /// point: recovery to time `t` stops there and reads nothing after it. Unchanged when no
    /// recorded time says so.
    pub fn stop_at_time(&self, plan: &mut RecoveryPlan, t: DateTime<Utc>) {
        let ss = self.segment_size;
        let from = plan.consistent_lsn.segment(ss);
        let stop = plan.segments.iter().position(|seg| {
            seg.segment_number(ss) >= from
                && self
                    .times
                    .get(seg)
                    .and_then(|x| x.last_commit)
                    .is_some_and(|last| last > t)
        });
        if let Some(i) = stop {
            plan.segments.truncate(i + 1);
            plan.first_missing = None;
            plan.gap_ahead = false;
            let end = plan.segments[i].segment_number(ss).saturating_add(1).saturating_mul(ss);
            plan.reachable_end = plan.consistent_lsn.max(Lsn(end));
        }
    }

    /// Restore points called `name` on the history of `target_tli`, in WAL order.
    pub fn restore_points_named(&self, name: &str, target_tli: TimelineId) -> Vec<FoundRestorePoint> {
        let ss = self.segment_size;
        let mut found: Vec<FoundRestorePoint> = self
            .times
            .iter()
            .filter(|(seg, _)| self.is_archived(seg))
            .flat_map(|(seg, t)| t.restore_points.iter().map(move |p| (seg, p)))
            .filter(|(seg, p)| {
                p.name == name
                    && p.lsn.segment(ss) == seg.segment_number(ss)
                    && self.expected_segment(target_tli, seg.segment_number(ss)) == **seg
                    && self.tree.contains(target_tli, seg.timeline, p.lsn)
            })
            .map(|(seg, p)| FoundRestorePoint {
                point: p.clone(),
                segment: *seg,
            })
            .collect();
        found.sort_by_key(|f| f.point.lsn);
        found
    }

    /// The newest restore point called `name` on the history of `target_tli`.
    pub fn find_restore_point(&self, name: &str, target_tli: TimelineId) -> Option<FoundRestorePoint> {
        self.restore_points_named(name, target_tli).pop()
    }
}

/// `XLogFileReadAnyTLI`'s choice: the newest timeline on the path that begins at or before the
/// segment (the root span always does).
fn expected_tli(spans: &[TimelineSpan], segno: u64, segment_size: u64) -> TimelineId {
    spans
        .iter()
        .rev()
        .find(|s| s.begin.segment(segment_size) <= segno)
        .or(spans.first())
        .map_or(1, |s| s.tli)
}
