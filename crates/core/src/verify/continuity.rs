//! WAL continuity, as the archive model sees it: which missing segments are damage and which
//! were expired on purpose, and how far each backup can be restored.
//!
//! Pure logic over an [`ArchiveModel`], so it is tested on synthetic archives. The rules:
//! - every segment from each backup's start to its stop (what makes it consistent) must be
//!   archived, unless the backup carries that WAL itself;
//! - from the *horizon* on (the WAL horizon `expire` recorded, else the oldest backup's start),
//!   WAL must be continuous up to the newest segment archived along each timeline that is the
//!   newest one or that a backup ends on, following the path recovery reads
//!   ([`ArchiveModel::expected_segment`]); a hole there is a [`Finding::WalGap`];
//! - a hole before the horizon is WAL removed on purpose: the backups before it are restorable
//!   to their end point, and the hole is listed per timeline, not as damage.

use std::collections::{BTreeMap, BTreeSet};

use crate::lsn::{Lsn, TimelineId};
use crate::timeline::{ArchiveModel, BackupPoint, TimelineWindows, Window};
use crate::verify::report::{Finding, GapReport, HorizonReport, Restorable, TimelineReport, WindowReport};
use crate::wal::{WalFileName, WalKind};

/// Where continuous WAL is required from: the recorded WAL horizon, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Horizon {
    pub timeline: TimelineId,
    pub lsn: Lsn,
}

/// The continuity part of a verify report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Continuity {
    pub findings: Vec<Finding>,
    pub timelines: Vec<TimelineReport>,
    /// Per backup (in scope), how far it restores, as far as WAL goes.
    pub restorable: BTreeMap<String, Restorable>,
    pub horizon: Option<HorizonReport>,
}

/// Assesses the archive. `archived`: every archived WAL name (others than segments are
/// ignored). `scope`: one backup id (`verify --backup`), or every backup.
pub fn assess(
    model: &ArchiveModel,
    archived: &[WalFileName],
    horizon: Option<Horizon>,
    scope: Option<&str>,
) -> Continuity {
    let ss = model.segment_size();
    let in_scope = |b: &&BackupPoint| scope.is_none_or(|id| b.id == id);
    let horizon = effective_horizon(model, horizon);
    let h_seg = horizon.as_ref().map(|h| h.lsn.segment(ss));
    let mut out = Continuity {
        horizon,
        ..Continuity::default()
    };

    // 1. Each backup's own start..stop.
    let mut inconsistent: BTreeSet<&str> = BTreeSet::new();
    for b in model.backups().iter().filter(in_scope).filter(|b| !b.wal_included) {
        for seg in model.consistency_segments(b) {
            if !model.is_archived(&seg) {
                inconsistent.insert(&b.id);
                out.findings.push(Finding::BackupWalMissing {
                    backup: b.id.clone(),
                    segment: seg.to_string(),
                });
            }
        }
    }

    // 2. Continuous WAL from the horizon along every timeline that matters.
    let targets = targets(model, scope, h_seg);
    let missing = walk_missing(model, archived, &targets, &mut out.findings);
    let runs = group_runs(&missing, ss);
    gap_findings(model, &runs, &mut out.findings);

    // 3. Per timeline and per backup.
    let windows = model.windows_by_timeline();
    out.timelines = timeline_reports(model, &windows, &missing, &runs);
    for b in model.backups().iter().filter(in_scope) {
        let r = if inconsistent.contains(b.id.as_str()) {
            Restorable::No
        } else {
            restorable(model, &windows, b, h_seg)
        };
        out.restorable.insert(b.id.clone(), r);
    }
    out
}

/// The timelines whose path must be continuous, each with the segment number it must be
/// continuous from: the newest timeline and every backup's stop timeline from the horizon on
/// (none without a horizon); with a scope, that backup's timelines from its own start on.
fn targets(model: &ArchiveModel, scope: Option<&str>, h_seg: Option<u64>) -> BTreeMap<TimelineId, u64> {
    let ss = model.segment_size();
    let newest = model.tree().highest_known();
    let mut targets = BTreeMap::new();
    match scope {
        None => {
            if let Some(h) = h_seg {
                targets.insert(newest, h);
                for b in model.backups() {
                    targets.insert(b.stop_tli, h);
                }
            }
        }
        Some(id) => {
            for b in model.backups().iter().filter(|b| b.id == id) {
                let from = b.first_archive_segno(ss).max(h_seg.unwrap_or(0));
                targets.insert(b.stop_tli, from);
                if model.backup_on_path(b, newest) {
                    targets.insert(newest, from);
                }
            }
        }
    }
    targets
}

/// Walks each target's path from its start to the newest segment archived on it; returns each
/// missing segment with the target it was found along. A target without its ancestry (no
/// history file) is a finding, and only its own segments are judged.
fn walk_missing(
    model: &ArchiveModel,
    archived: &[WalFileName],
    targets: &BTreeMap<TimelineId, u64>,
    findings: &mut Vec<Finding>,
) -> BTreeMap<WalFileName, TimelineId> {
    let ss = model.segment_size();
    let segments: Vec<WalFileName> = archived
        .iter()
        .copied()
        .filter(|n| n.kind == WalKind::Segment)
        .collect();
    let mut missing: BTreeMap<WalFileName, TimelineId> = BTreeMap::new();
    for (&target, &from) in targets {
        let (_, known) = model.tree().path_or_root(target);
        let mut from = from;
        if !known && target != 1 {
            findings.push(Finding::HistoryMissing { timeline: target });
            let own_oldest = segments
                .iter()
                .filter(|n| n.timeline == target)
                .map(|n| n.segment_number(ss))
                .min();
            match own_oldest {
                Some(o) => from = from.max(o),
                None => continue,
            }
        }
        // The newest segment archived on the path recovery follows to `target`.
        let Some(end) = segments
            .iter()
            .filter(|n| model.expected_segment(target, n.segment_number(ss)) == **n)
            .map(|n| n.segment_number(ss))
            .max()
        else {
            continue;
        };
        for n in from..=end {
            let e = model.expected_segment(target, n);
            if !model.is_archived(&e) {
                missing.entry(e).or_insert(target);
            }
        }
    }
    missing
}

/// One [`Finding::WalGap`] per run, with the commit times either side and the window it ends.
fn gap_findings(model: &ArchiveModel, runs: &[Run], findings: &mut Vec<Finding>) {
    let ss = model.segment_size();
    let by_tli: BTreeMap<TimelineId, Vec<Window>> = runs
        .iter()
        .map(|r| r.target)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|t| (t, model.windows(t)))
        .collect();
    for r in runs {
        let cut = by_tli
            .get(&r.target)
            .and_then(|ws| ws.iter().find(|w| w.ends_at_gap == Some(r.first)));
        findings.push(Finding::WalGap {
            timeline: r.first.timeline,
            first_missing: r.first.to_string(),
            last_missing: r.last.to_string(),
            after: cut.and_then(|w| w.end_time),
            before: model.earliest_commit_after(r.target, r.last.segment_number(ss)),
            window_from: cut.map(|w| w.from_backup.clone()),
            window_end: cut.map(|w| w.end_lsn),
            reason: model.gap_reason(&r.first, &r.last),
        });
    }
}

/// The recorded horizon, else the start of the oldest backup; `None` without either.
fn effective_horizon(model: &ArchiveModel, recorded: Option<Horizon>) -> Option<HorizonReport> {
    if let Some(h) = recorded {
        return Some(HorizonReport {
            timeline: h.timeline,
            lsn: h.lsn,
            source: "expire",
        });
    }
    model
        .backups()
        .iter()
        .min_by_key(|b| (b.start_lsn, b.start_tli))
        .map(|b| HorizonReport {
            timeline: b.start_tli,
            // A backup carrying its own WAL needs the archive only from its stop on.
            lsn: if b.wal_included { b.stop_lsn } else { b.start_lsn },
            source: "oldest_backup",
        })
}

/// A run of consecutive missing segments of one timeline.
#[derive(Clone, Debug)]
struct Run {
    first: WalFileName,
    last: WalFileName,
    target: TimelineId,
}

fn group_runs(missing: &BTreeMap<WalFileName, TimelineId>, ss: u64) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (&name, &target) in missing {
        match runs.last_mut() {
            Some(r)
                if r.last.timeline == name.timeline
                    && r.last.segment_number(ss).saturating_add(1) == name.segment_number(ss) =>
            {
                r.last = name;
            }
            _ => runs.push(Run {
                first: name,
                last: name,
                target,
            }),
        }
    }
    runs
}

/// Windows and gaps per timeline: the model's gaps (damage when they hold a segment found
/// missing after the horizon) and the damage runs the model's per-timeline view does not show.
fn timeline_reports(
    model: &ArchiveModel,
    windows: &[TimelineWindows],
    missing: &BTreeMap<WalFileName, TimelineId>,
    runs: &[Run],
) -> Vec<TimelineReport> {
    let ss = model.segment_size();
    let mut out: BTreeMap<TimelineId, TimelineReport> = BTreeMap::new();
    let entry = |out: &mut BTreeMap<TimelineId, TimelineReport>, tli| {
        out.entry(tli).or_insert_with(|| TimelineReport {
            timeline: tli,
            windows: Vec::new(),
            gaps: Vec::new(),
        });
    };
    for tw in windows {
        entry(&mut out, tw.tli);
        if let Some(t) = out.get_mut(&tw.tli) {
            t.windows = tw
                .windows
                .iter()
                .map(|w| WindowReport {
                    from_backup: w.from_backup.clone(),
                    start_lsn: w.start_lsn,
                    start_time: w.start_time,
                    end_lsn: w.end_lsn,
                    end_time: w.end_time,
                })
                .collect();
        }
    }
    let mut covered: BTreeSet<WalFileName> = BTreeSet::new();
    for g in model.gaps() {
        let (a, z) = (g.first_missing.segment_number(ss), g.last_missing.segment_number(ss));
        let names: Vec<WalFileName> = (a..=z)
            .map(|n| WalFileName::from_segment_number(g.tli, n, ss))
            .collect();
        let damage = names.iter().any(|n| missing.contains_key(n));
        covered.extend(names);
        entry(&mut out, g.tli);
        if let Some(t) = out.get_mut(&g.tli) {
            t.gaps.push(GapReport {
                first_missing: g.first_missing.to_string(),
                last_missing: g.last_missing.to_string(),
                damage,
                reason: g.reason.clone(),
            });
        }
    }
    for r in runs.iter().filter(|r| !covered.contains(&r.first)) {
        entry(&mut out, r.first.timeline);
        if let Some(t) = out.get_mut(&r.first.timeline) {
            t.gaps.push(GapReport {
                first_missing: r.first.to_string(),
                last_missing: r.last.to_string(),
                damage: true,
                reason: model.gap_reason(&r.first, &r.last),
            });
            t.gaps.sort_by(|a, b| a.first_missing.cmp(&b.first_missing));
        }
    }
    out.into_values().collect()
}

/// How far `b` restores (its consistent WAL is known to be there): its widest window, or its
/// end point when its window stops at a hole before the horizon.
fn restorable(model: &ArchiveModel, windows: &[TimelineWindows], b: &BackupPoint, h_seg: Option<u64>) -> Restorable {
    let ss = model.segment_size();
    let best = windows
        .iter()
        .flat_map(|tw| tw.windows.iter().map(move |w| (tw.tli, w)))
        .filter(|(_, w)| w.backups.contains(&b.id))
        .max_by_key(|(tli, w)| (w.end_lsn, *tli));
    let end_point = Restorable::EndPoint {
        lsn: b.stop_lsn,
        time: b.stop_time,
    };
    let Some((tli, w)) = best else {
        return end_point;
    };
    let before_horizon = |g: &WalFileName| h_seg.is_some_and(|h| g.segment_number(ss) < h);
    if w.ends_at_gap.as_ref().is_some_and(before_horizon) {
        return end_point;
    }
    Restorable::Window {
        timeline: tli,
        start_lsn: b.stop_lsn,
        start_time: b.stop_time,
        end_lsn: w.end_lsn,
        end_time: w.end_time,
    }
}
