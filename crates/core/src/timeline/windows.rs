//! Gaps and recoverable windows: what `list` shows and what retention, verify and drills check.
//!
//! A window is what can really be recovered to along one timeline: it starts at a backup's
//! consistent point and ends where the contiguous WAL recovery reads from that backup ends (see
//! [`ArchiveModel::plan_recovery`]); windows that overlap merge, so a window never spans a
//! segment the archive lacks. A gap is a run of missing segments of one timeline inside the
//! stretch that timeline's WAL is needed for.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::lsn::{Lsn, TimelineId};
use crate::timeline::model::{ArchiveModel, BackupPoint};
use crate::wal::WalFileName;

/// Missing segments of one timeline, `first_missing..=last_missing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub tli: TimelineId,
    pub first_missing: WalFileName,
    pub last_missing: WalFileName,
    /// Why it is missing, when it was recorded (e.g. "dropped by archive_push_queue_max at …").
    pub reason: Option<String>,
}

/// A stretch that can really be recovered to, along one timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The oldest backup that starts this window.
    pub from_backup: String,
    /// Every backup whose window merged into this one, oldest first.
    pub backups: Vec<String>,
    pub start_lsn: Lsn,
    pub start_time: DateTime<Utc>,
    pub end_lsn: Lsn,
    pub end_time: Option<DateTime<Utc>>,
    /// The missing segment that ends the window, when segments exist after it.
    pub ends_at_gap: Option<WalFileName>,
}

/// The windows of one timeline, for `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineWindows {
    pub tli: TimelineId,
    pub ancestry_known: bool,
    pub windows: Vec<Window>,
}

impl ArchiveModel {
    /// Missing segments per timeline. For timeline `T` the span checked runs from the oldest
    /// segment of `T` that something needs (its oldest archived segment, or the first archive
    /// segment of a backup on `T`'s history, whichever is older, but never before `T` begins) to
    /// the newest segment of `T` archived; every segment of `T` missing inside it is a gap.
    pub fn gaps(&self) -> Vec<Gap> {
        let ss = self.segment_size;
        let mut gaps = Vec::new();
        for (&tli, set) in &self.archived {
            let Some(&oldest) = set.first() else { continue };
            let (spans, _) = self.tree.path_or_root(tli);
            let begin = spans.last().map_or(0, |s| s.begin.segment(ss));
            let needed = self
                .backups
                .iter()
                .filter(|b| self.backup_on_path(b, tli))
                .map(|b| b.first_archive_segno(ss))
                .min()
                .unwrap_or(oldest);
            let mut expect = oldest.min(needed).max(begin);
            for &s in set.range(expect..) {
                if s > expect {
                    let (first_missing, last_missing) = (self.name(tli, expect), self.name(tli, s - 1));
                    gaps.push(Gap {
                        tli,
                        reason: self.gap_reason(&first_missing, &last_missing),
                        first_missing,
                        last_missing,
                    });
                }
                expect = s + 1;
            }
        }
        gaps
    }

    /// The windows recoverable along `target_tli`, oldest first; overlapping ones merged.
    ///
    /// Recovery from a backup walks the contiguous WAL after it, so planning every backup costs
    /// backups × segments. A backup that starts at or after the backup whose plan set the current
    /// window's end, and is consistent inside that window, reads a subset of the same contiguous
    /// segments and ends at the same point: it joins the window without a plan of its own, which
    /// keeps a repository with many backups linear in its archive.
    pub fn windows(&self, target_tli: TimelineId) -> Vec<Window> {
        let ss = self.segment_size;
        let mut windows: Vec<Window> = Vec::new();
        // The first archive segment of the backup whose plan set the last window's end.
        let mut anchor: Option<u64> = None;
        for b in &self.backups {
            if let (Some(cur), Some(first)) = (windows.last_mut(), anchor) {
                if b.first_archive_segno(ss) >= first && b.stop_lsn <= cur.end_lsn && self.backup_on_path(b, target_tli)
                {
                    cur.backups.push(b.id.clone());
                    continue;
                }
            }
            let Some(w) = self.window_from(b, target_tli) else {
                continue;
            };
            match windows.last_mut() {
                Some(cur) if w.start_lsn <= cur.end_lsn => {
                    if w.end_lsn >= cur.end_lsn {
                        anchor = Some(b.first_archive_segno(ss));
                    }
                    merge(cur, w)
                }
                _ => {
                    anchor = Some(b.first_archive_segno(ss));
                    windows.push(w)
                }
            }
        }
        windows
    }

    /// [`ArchiveModel::windows`] the slow way, planning every backup: the oracle of its test.
    #[cfg(test)]
    pub(crate) fn windows_planning_each(&self, target_tli: TimelineId) -> Vec<Window> {
        let mut windows: Vec<Window> = Vec::new();
        for b in &self.backups {
            let Some(w) = self.window_from(b, target_tli) else {
                continue;
            };
            match windows.last_mut() {
                Some(cur) if w.start_lsn <= cur.end_lsn => merge(cur, w),
                _ => windows.push(w),
            }
        }
        windows
    }

    /// The window recovery from `b` along `target_tli` reaches, `None` when `b` is off that path
    /// or its WAL cannot make it consistent.
    fn window_from(&self, b: &BackupPoint, target_tli: TimelineId) -> Option<Window> {
        let plan = self.plan_recovery(b, target_tli, None);
        if !plan.backup_on_path || !plan.reaches_consistency {
            return None;
        }
        Some(Window {
            from_backup: b.id.clone(),
            backups: vec![b.id.clone()],
            start_lsn: b.stop_lsn,
            start_time: b.stop_time,
            end_lsn: plan.reachable_end,
            end_time: plan.reachable_end_time,
            ends_at_gap: plan.first_missing.filter(|_| plan.gap_ahead),
        })
    }

    /// Windows for every timeline that is a leaf or has backups ending on it.
    pub fn windows_by_timeline(&self) -> Vec<TimelineWindows> {
        let timelines = self.tree.timelines();
        let parents: BTreeSet<TimelineId> = timelines.iter().filter_map(|&t| self.tree.parent(t)).collect();
        timelines
            .into_iter()
            .filter(|t| !parents.contains(t) || self.backups.iter().any(|b| b.stop_tli == *t))
            .map(|tli| TimelineWindows {
                tli,
                ancestry_known: self.tree.path(tli).is_ok(),
                windows: self.windows(tli),
            })
            .collect()
    }
}

fn merge(cur: &mut Window, w: Window) {
    cur.backups.push(w.from_backup.clone());
    if w.end_lsn > cur.end_lsn {
        cur.end_lsn = w.end_lsn;
        cur.end_time = w.end_time;
        cur.ends_at_gap = w.ends_at_gap;
    } else if w.end_lsn == cur.end_lsn {
        cur.end_time = match (cur.end_time, w.end_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}
