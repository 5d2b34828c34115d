//! Which archived WAL objects retention keeps.
//!
//! - Continuous WAL from the *horizon* (the start of the oldest backup kept by `keep_full`,
//!   `recovery_window`, or as the newest) onward, along the history of every *target* timeline:
//!   the newest timeline the archive shows and the timeline each such backup ends on. On each
//!   timeline of such a history, the stretch the history uses (from where the timeline begins
//!   to the segment where the history leaves it) is kept. A branch that is no target (abandoned,
//!   no continuously kept backup on it, not the newest) loses its WAL after the fork.
//! - Each kept backup's own start-to-stop WAL ([`ArchiveModel::consistency_segments`]), so
//!   that a backup kept by the GFS counts, a pin or as a parent stays restorable to its end.
//! - `.backup` and `.partial` files follow the segments they sit in (a `.partial` also its
//!   predecessor); `.history` files are always kept; names the model cannot place (segment
//!   numbers impossible for the segment size) are never touched.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::lsn::TimelineId;
use crate::repository::state::WalHorizon;
use crate::repository::summary::BackupSummary;
use crate::retention::plan::{KeptBackup, PlanInput};
use crate::timeline::{ArchiveModel, TimelineSpan, TimelineWindows};
use crate::wal::{WalFileName, WalKind};

/// A run of WAL objects of one timeline the plan deletes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WalRange {
    pub timeline: TimelineId,
    pub first: String,
    pub last: String,
    /// Objects in the run (segments with their `.partial` / `.backup` files).
    pub objects: usize,
    pub bytes: u64,
}

/// The continuous stretch kept on one timeline: segment numbers `from..=to` (`to`: `None` = to
/// the archive's end).
#[derive(Clone, Copy, Debug)]
struct Stretch {
    from: u64,
    to: Option<u64>,
}

struct Keeper {
    segment_size: u64,
    exact: HashSet<(TimelineId, u64)>,
    stretches: HashMap<TimelineId, Vec<Stretch>>,
}

impl Keeper {
    fn keeps(&self, tli: TimelineId, segno: u64) -> bool {
        self.exact.contains(&(tli, segno))
            || self
                .stretches
                .get(&tli)
                .is_some_and(|v| v.iter().any(|s| segno >= s.from && s.to.is_none_or(|t| segno <= t)))
    }

    fn keeps_name(&self, name: &WalFileName) -> bool {
        let per_log = 0x1_0000_0000 / self.segment_size;
        if u64::from(name.seg) >= per_log {
            return true;
        }
        let n = name.segment_number(self.segment_size);
        match name.kind {
            WalKind::History => true,
            WalKind::Segment | WalKind::Backup { .. } => self.keeps(name.timeline, n),
            WalKind::Partial => self.keeps(name.timeline, n) || (n > 0 && self.keeps(name.timeline, n - 1)),
        }
    }
}

/// The stretch of `span` from segment `from` on.
fn stretch_of(span: &TimelineSpan, from: u64, ss: u64) -> Option<Stretch> {
    let begin = span.begin.segment(ss).max(from);
    let to = span.end.map(|e| e.segment(ss));
    if to.is_some_and(|t| t < begin) {
        return None;
    }
    Some(Stretch { from: begin, to })
}

/// The WAL objects to delete and the horizon to record first.
pub(crate) fn wal_to_delete(
    input: &PlanInput<'_>,
    keep: &[KeptBackup],
    kept: &[&BackupSummary],
) -> (Vec<WalFileName>, Option<WalHorizon>) {
    let model = input.model;
    let ss = model.segment_size();
    let mut keeper = Keeper {
        segment_size: ss,
        exact: HashSet::new(),
        stretches: HashMap::new(),
    };
    for b in kept {
        for name in model.consistency_segments(&b.point()) {
            keeper.exact.insert((name.timeline, name.segment_number(ss)));
        }
    }
    let continuous: Vec<&BackupSummary> = kept
        .iter()
        .filter(|b| keep.iter().any(|k| k.id == b.id && k.continuous))
        .copied()
        .collect();
    // The oldest start among continuously kept backups (LSNs order across timelines).
    let Some(anchor) = continuous.iter().min_by_key(|b| (b.start_lsn, b.stop_time)).copied() else {
        // No backup at all: nothing can be judged unneeded.
        return (Vec::new(), None);
    };
    let from = anchor.start_lsn.segment(ss);
    let mut targets: BTreeSet<TimelineId> = continuous.iter().map(|b| b.stop_timeline).collect();
    targets.insert(model.tree().highest_known());
    for t in targets {
        let (spans, _) = model.tree().path_or_root(t);
        for span in &spans {
            if let Some(s) = stretch_of(span, from, ss) {
                keeper.stretches.entry(span.tli).or_default().push(s);
            }
        }
    }
    let delete: Vec<WalFileName> = input
        .wal
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !keeper.keeps_name(n))
        .collect();
    let horizon = WalHorizon {
        written_at: input.now,
        backup: anchor.id.clone(),
        timeline: anchor.timeline,
        lsn: anchor.start_lsn,
    };
    (delete, Some(horizon))
}

/// `names` (sorted) grouped into runs of consecutive segment numbers per timeline.
pub(crate) fn ranges(input: &PlanInput<'_>, names: &[WalFileName]) -> Vec<WalRange> {
    let ss = input.model.segment_size();
    let sizes: HashMap<WalFileName, u64> = input.wal.iter().copied().collect();
    let mut per_tli: BTreeMap<TimelineId, Vec<WalFileName>> = BTreeMap::new();
    for n in names {
        per_tli.entry(n.timeline).or_default().push(*n);
    }
    let mut out = Vec::new();
    for (tli, mut v) in per_tli {
        v.sort_by_key(|n| (n.segment_number(ss), n.kind));
        let mut cur: Option<(WalRange, u64)> = None;
        for n in v {
            let segno = n.segment_number(ss);
            let size = sizes.get(&n).copied().unwrap_or(0);
            match &mut cur {
                Some((r, last)) if segno <= *last + 1 => {
                    r.last = n.to_string();
                    r.objects += 1;
                    r.bytes += size;
                    *last = segno;
                }
                _ => {
                    if let Some((r, _)) = cur.take() {
                        out.push(r);
                    }
                    let r = WalRange {
                        timeline: tli,
                        first: n.to_string(),
                        last: n.to_string(),
                        objects: 1,
                        bytes: size,
                    };
                    cur = Some((r, segno));
                }
            }
        }
        if let Some((r, _)) = cur {
            out.push(r);
        }
    }
    out
}

/// The archive model after the plan: the kept backups and the WAL not deleted.
pub(crate) fn model_after(input: &PlanInput<'_>, kept: &[&BackupSummary], deleted: &[WalFileName]) -> ArchiveModel {
    let gone: HashSet<&WalFileName> = deleted.iter().collect();
    let model = input.model;
    let remaining = input.wal.iter().map(|(n, _)| *n).filter(|n| !gone.contains(n));
    let points = kept.iter().map(|b| b.point()).collect();
    // The same segment size and tree as a model that exists: construction cannot fail.
    ArchiveModel::new(
        model.segment_size(),
        model.tree().clone(),
        remaining,
        points,
        HashMap::new(),
    )
    .unwrap_or_else(|_| model.clone())
}

pub(crate) fn windows_after(
    input: &PlanInput<'_>,
    kept: &[&BackupSummary],
    deleted: &[WalFileName],
) -> Vec<TimelineWindows> {
    model_after(input, kept, deleted).windows_by_timeline()
}
