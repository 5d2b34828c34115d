//! Choosing the backup for a recovery target, and refusing a target the archive cannot reach.
//!
//! The rules, and the PostgreSQL behaviour behind each:
//! - Only a backup on the history of the target timeline can be used: recovery checks that the
//!   backup's checkpoint and minimum recovery point lie on the target's history
//!   (`tliOfPointInHistory` in `InitWalRecovery`, "requested timeline is not a child of this
//!   server's history").
//! - The backup must be consistent before the target: a stop before the consistent point is
//!   refused by PostgreSQL ("requested recovery stop point is before consistent recovery point").
//!   Among those, the newest wins (least WAL to replay).
//! - A target beyond a gap, or beyond the archive's end, is refused here with the furthest
//!   reachable point. With no target, PostgreSQL would end recovery at a gap and promote, losing
//!   everything after it without a word: that case is refused too, naming the missing segment
//!   and the reachable end, so the caller can ask for a target up to it.
//! - Where the model cannot know (times not recorded for old segments, transaction ids), the
//!   choice is allowed: PostgreSQL itself fails when recovery ends before a configured target
//!   ("recovery ended before configured recovery target was reached").

use std::fmt;

use chrono::{DateTime, Utc};

use crate::lsn::{Lsn, TimelineId};
use crate::timeline::model::{ArchiveModel, BackupPoint, FoundRestorePoint, RecoveryPlan};
use crate::wal::WalFileName;

/// Where recovery should stop, in the model's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelTarget {
    /// Replay all archived WAL.
    End,
    /// Stop as soon as the backup is consistent.
    Immediate,
    Lsn(Lsn),
    Time(DateTime<Utc>),
    Name(String),
    /// A full 64-bit transaction id (epoch included).
    Xid {
        full: u64,
    },
}

impl fmt::Display for ModelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelTarget::End => f.write_str("the end of the archived WAL"),
            ModelTarget::Immediate => f.write_str("the end of the backup"),
            ModelTarget::Lsn(l) => write!(f, "LSN {l}"),
            ModelTarget::Time(t) => write!(f, "time {}", t.to_rfc3339()),
            ModelTarget::Name(n) => write!(f, "restore point '{n}'"),
            ModelTarget::Xid { full } => write!(f, "transaction {full}"),
        }
    }
}

/// Which timeline recovery follows (`recovery_target_timeline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineSpec {
    Latest,
    /// The backup's own (stop) timeline.
    Current,
    Id(TimelineId),
}

/// The backup to restore and what recovery from it will read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub backup: BackupPoint,
    pub target_tli: TimelineId,
    pub plan: RecoveryPlan,
    /// For a restore-point target: the point recovery will stop at.
    pub restore_point: Option<FoundRestorePoint>,
}

fn at(time: &Option<DateTime<Utc>>) -> String {
    time.map(|t| format!(" (last commit at {})", t.to_rfc3339()))
        .unwrap_or_default()
}

/// Why no backup can be restored to the target.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChoiceError {
    #[error("the repository has no complete backup")]
    NoBackups,
    #[error("there is no backup {id} in the repository")]
    UnknownBackup { id: String },
    #[error("timeline {target_tli} is not in the archive: no history file or WAL segment names it")]
    UnknownTimeline { target_tli: TimelineId },
    #[error("backup {id} is not on the history of timeline {target_tli}: it ends at {stop_lsn} on timeline {stop_tli}, a point that timeline does not pass through")]
    NotOnPath {
        id: String,
        target_tli: TimelineId,
        stop_tli: TimelineId,
        stop_lsn: Lsn,
    },
    #[error("no backup lies on the history of timeline {target_tli}")]
    NoBackupOnPath { target_tli: TimelineId },
    #[error("backup {id} cannot reach {target}: it is consistent only from {consistent_lsn}, at {}", .consistent_time.to_rfc3339())]
    BackupAfterTarget {
        id: String,
        target: ModelTarget,
        consistent_lsn: Lsn,
        consistent_time: DateTime<Utc>,
    },
    #[error("no backup on the history of timeline {target_tli} is consistent before {target}: the oldest, {oldest}, is consistent from {oldest_lsn}, at {}", .oldest_time.to_rfc3339())]
    TargetBeforeOldest {
        target: ModelTarget,
        target_tli: TimelineId,
        oldest: String,
        oldest_lsn: Lsn,
        oldest_time: DateTime<Utc>,
    },
    #[error("no backup on the history of timeline {target_tli} was taken before transaction {xid} ended: every one already contains it")]
    XidTooOld { xid: u64, target_tli: TimelineId },
    #[error("no restore point named '{name}' is recorded on the history of timeline {target_tli}")]
    RestorePointNotFound { name: String, target_tli: TimelineId },
    #[error("backup {id} cannot be made consistent: WAL segment {first_missing} is missing from the archive{why}")]
    NotConsistent {
        id: String,
        first_missing: WalFileName,
        /// Why it is missing when that was recorded (`" (dropped by …)"`), else empty.
        why: String,
    },
    #[error("{target} cannot be reached: WAL segment {first_missing} is missing from the archive{why}; the furthest point recovery can reach is {reachable_lsn}{}", at(.reachable_time))]
    GapBeforeTarget {
        target: ModelTarget,
        first_missing: WalFileName,
        why: String,
        reachable_lsn: Lsn,
        reachable_time: Option<DateTime<Utc>>,
    },
    #[error("{target} is beyond the end of the archived WAL, which ends at {end_lsn}{}", at(.end_time))]
    BeyondEnd {
        target: ModelTarget,
        end_lsn: Lsn,
        end_time: Option<DateTime<Utc>>,
    },
    #[error("recovery from backup {id} would stop early at a gap: WAL segment {first_missing} is missing while later segments are archived{why}; the furthest point recovery can reach is {reachable_lsn}{}", at(.reachable_time))]
    GapAfterBackup {
        id: String,
        first_missing: WalFileName,
        why: String,
        reachable_lsn: Lsn,
        reachable_time: Option<DateTime<Utc>>,
    },
}

/// Answers, per backup, whether the target transaction was still running or not yet started
/// when the backup stopped (`Some(true)`: the backup can reach it), or `None` when unknown.
pub type XidAfterBackup<'a> = &'a dyn Fn(&BackupPoint) -> Option<bool>;

impl ArchiveModel {
    /// `recovery_target_timeline` as PostgreSQL resolves it for recovery from `backup`.
    pub fn resolve_timeline(&self, spec: TimelineSpec, backup: &BackupPoint) -> TimelineId {
        match spec {
            TimelineSpec::Latest => self.tree.latest_from(backup.start_tli),
            TimelineSpec::Current => backup.stop_tli,
            TimelineSpec::Id(tli) => tli,
        }
    }

    /// Picks the newest backup on the path to `target_tli` that is consistent before `target`
    /// (or checks `explicit`), and refuses a target the archive cannot reach.
    pub fn choose_backup(
        &self,
        target: &ModelTarget,
        target_tli: TimelineId,
        explicit: Option<&str>,
        xid_after_backup: XidAfterBackup<'_>,
    ) -> Result<Choice, ChoiceError> {
        if self.backups.is_empty() {
            return Err(ChoiceError::NoBackups);
        }
        if !self.tree.is_known(target_tli) {
            return Err(ChoiceError::UnknownTimeline { target_tli });
        }
        let points = match target {
            ModelTarget::Name(name) => {
                let found = self.restore_points_named(name, target_tli);
                if found.is_empty() {
                    return Err(ChoiceError::RestorePointNotFound {
                        name: name.clone(),
                        target_tli,
                    });
                }
                found
            }
            _ => Vec::new(),
        };
        // The restore point recovery from `b` stops at: the first of that name after its start.
        let stop_point = |b: &BackupPoint| points.iter().find(|p| p.point.lsn >= b.start_lsn).cloned();
        let fits = |b: &BackupPoint| match target {
            ModelTarget::End | ModelTarget::Immediate => true,
            ModelTarget::Lsn(l) => b.stop_lsn <= *l,
            ModelTarget::Time(t) => b.stop_time <= *t,
            ModelTarget::Name(_) => stop_point(b).is_some_and(|p| p.point.lsn >= b.stop_lsn),
            ModelTarget::Xid { .. } => xid_after_backup(b) != Some(false),
        };
        let backup = match explicit.filter(|id| *id != "latest") {
            Some(id) => self.explicit_backup(id, target, target_tli, &fits)?,
            None => self.newest_fitting(target, target_tli, &fits)?,
        };
        let restore_point = stop_point(backup).filter(|_| matches!(target, ModelTarget::Name(_)));
        let until = match target {
            ModelTarget::Immediate => Some(Lsn(backup.stop_lsn.0.saturating_sub(1))),
            ModelTarget::Lsn(l) => Some(*l),
            ModelTarget::Name(_) => restore_point.as_ref().map(|p| p.point.lsn),
            ModelTarget::End | ModelTarget::Time(_) | ModelTarget::Xid { .. } => None,
        };
        let mut plan = self.plan_recovery(backup, target_tli, until);
        check_reach(target, backup, &plan).map_err(|e| self.explain(e))?;
        self.check_time_beyond_gap(target, &plan).map_err(|e| self.explain(e))?;
        if let ModelTarget::Time(t) = target {
            self.stop_at_time(&mut plan, *t);
        }
        Ok(Choice {
            backup: backup.clone(),
            target_tli,
            plan,
            restore_point,
        })
    }

    /// [`choose_backup`](Self::choose_backup) with the timeline given as PostgreSQL's setting:
    /// `latest` is resolved from each backup's own timeline (as PostgreSQL will) and the newest
    /// resolution that has a usable backup wins; `current` is the timeline of the named backup
    /// or else of the newest backup before the target.
    pub fn choose_backup_for(
        &self,
        target: &ModelTarget,
        spec: TimelineSpec,
        explicit: Option<&str>,
        xid_after_backup: XidAfterBackup<'_>,
    ) -> Result<Choice, ChoiceError> {
        let explicit = explicit.filter(|id| *id != "latest");
        match spec {
            TimelineSpec::Id(tli) => self.choose_backup(target, tli, explicit, xid_after_backup),
            TimelineSpec::Latest => {
                // PostgreSQL resolves `latest` from the backup's own timeline; try each timeline
                // some backup resolves to, newest first, and keep a choice that agrees with it.
                let mut resolved: Vec<TimelineId> = self
                    .backups
                    .iter()
                    .filter(|b| explicit.is_none_or(|id| b.id == id))
                    .map(|b| self.resolve_timeline(spec, b))
                    .collect();
                resolved.sort_unstable();
                resolved.dedup();
                let mut first_error = None;
                for tli in resolved.into_iter().rev() {
                    match self.choose_backup(target, tli, explicit, xid_after_backup) {
                        Ok(c) if self.resolve_timeline(spec, &c.backup) == tli => return Ok(c),
                        Ok(_) => {}
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                match first_error {
                    Some(e) => Err(e),
                    None => self.choose_backup(target, self.tree.latest(), explicit, xid_after_backup),
                }
            }
            TimelineSpec::Current => {
                let anchor = match explicit {
                    Some(id) => self.backups.iter().find(|b| b.id == id),
                    None => self.backups.iter().rev().find(|b| match target {
                        ModelTarget::Lsn(l) => b.stop_lsn <= *l,
                        ModelTarget::Time(t) => b.stop_time <= *t,
                        ModelTarget::Xid { .. } => xid_after_backup(b) != Some(false),
                        _ => true,
                    }),
                };
                let tli = anchor.or(self.backups.first()).map_or(1, |b| b.stop_tli);
                self.choose_backup(target, tli, explicit, xid_after_backup)
            }
        }
    }

    fn explicit_backup(
        &self,
        id: &str,
        target: &ModelTarget,
        target_tli: TimelineId,
        fits: &dyn Fn(&BackupPoint) -> bool,
    ) -> Result<&BackupPoint, ChoiceError> {
        let b = self
            .backups
            .iter()
            .find(|b| b.id == id)
            .ok_or_else(|| ChoiceError::UnknownBackup { id: id.into() })?;
        if !self.backup_on_path(b, target_tli) {
            return Err(ChoiceError::NotOnPath {
                id: b.id.clone(),
                target_tli,
                stop_tli: b.stop_tli,
                stop_lsn: b.stop_lsn,
            });
        }
        if !fits(b) {
            return Err(match target {
                ModelTarget::Xid { full } => ChoiceError::XidTooOld { xid: *full, target_tli },
                _ => ChoiceError::BackupAfterTarget {
                    id: b.id.clone(),
                    target: target.clone(),
                    consistent_lsn: b.stop_lsn,
                    consistent_time: b.stop_time,
                },
            });
        }
        Ok(b)
    }

    fn newest_fitting(
        &self,
        target: &ModelTarget,
        target_tli: TimelineId,
        fits: &dyn Fn(&BackupPoint) -> bool,
    ) -> Result<&BackupPoint, ChoiceError> {
        let on_path: Vec<&BackupPoint> = self
            .backups
            .iter()
            .filter(|b| self.backup_on_path(b, target_tli))
            .collect();
        let Some(oldest) = on_path.first() else {
            return Err(ChoiceError::NoBackupOnPath { target_tli });
        };
        let fitting: Vec<&BackupPoint> = on_path.iter().rev().copied().filter(|b| fits(b)).collect();
        // A backup whose own WAL is gone cannot be used; an older one may still be.
        if let Some(b) = fitting
            .iter()
            .find(|b| self.plan_recovery(b, target_tli, None).reaches_consistency)
        {
            return Ok(b);
        }
        if let Some(b) = fitting.first() {
            return Ok(b);
        }
        Err(match target {
            ModelTarget::Xid { full } => ChoiceError::XidTooOld { xid: *full, target_tli },
            _ => ChoiceError::TargetBeforeOldest {
                target: target.clone(),
                target_tli,
                oldest: oldest.id.clone(),
                oldest_lsn: oldest.stop_lsn,
                oldest_time: oldest.stop_time,
            },
        })
    }
}

impl ArchiveModel {
    /// Adds why the missing segment of a refusal is missing, when a declared gap says so.
    fn explain(&self, mut e: ChoiceError) -> ChoiceError {
        if let ChoiceError::NotConsistent { first_missing, why, .. }
        | ChoiceError::GapBeforeTarget { first_missing, why, .. }
        | ChoiceError::GapAfterBackup { first_missing, why, .. } = &mut e
        {
            if let Some(r) = self.missing_reason(first_missing) {
                *why = format!(" ({r}; only a newer full backup covers what follows)");
            }
        }
        e
    }

    /// With no recorded end time for the run, a time target is still known to lie beyond a gap
    /// when a commit after the gap is not later than it: recovery must replay that commit.
    fn check_time_beyond_gap(&self, target: &ModelTarget, plan: &RecoveryPlan) -> Result<(), ChoiceError> {
        let (ModelTarget::Time(t), Some(missing), true) = (target, plan.first_missing, plan.gap_ahead) else {
            return Ok(());
        };
        let after = missing.segment_number(self.segment_size);
        match self.earliest_commit_after(plan.target_tli, after) {
            Some(first) if first <= *t && plan.reachable_end_time.is_none() => Err(ChoiceError::GapBeforeTarget {
                target: target.clone(),
                first_missing: missing,
                why: String::new(),
                reachable_lsn: plan.reachable_end,
                reachable_time: None,
            }),
            _ => Ok(()),
        }
    }
}

/// Refuses a plan that cannot reach `target`.
fn check_reach(target: &ModelTarget, backup: &BackupPoint, plan: &RecoveryPlan) -> Result<(), ChoiceError> {
    if !plan.reaches_consistency {
        let first_missing = plan
            .first_missing
            .unwrap_or_else(|| WalFileName::segment_for(backup.start_tli, backup.start_lsn, plan.segment_size));
        return Err(ChoiceError::NotConsistent {
            id: backup.id.clone(),
            first_missing,
            why: String::new(),
        });
    }
    let short = |plan: &RecoveryPlan| match plan.first_missing.filter(|_| plan.gap_ahead) {
        Some(first_missing) => ChoiceError::GapBeforeTarget {
            target: target.clone(),
            first_missing,
            why: String::new(),
            reachable_lsn: plan.reachable_end,
            reachable_time: plan.reachable_end_time,
        },
        None => ChoiceError::BeyondEnd {
            target: target.clone(),
            end_lsn: plan.reachable_end,
            end_time: plan.reachable_end_time,
        },
    };
    match target {
        ModelTarget::End => match plan.first_missing.filter(|_| plan.gap_ahead) {
            Some(first_missing) => Err(ChoiceError::GapAfterBackup {
                id: backup.id.clone(),
                first_missing,
                why: String::new(),
                reachable_lsn: plan.reachable_end,
                reachable_time: plan.reachable_end_time,
            }),
            None => Ok(()),
        },
        ModelTarget::Lsn(l) if !plan.reaches(*l) => Err(short(plan)),
        // PostgreSQL stops at the first commit after the target time: one must exist.
        ModelTarget::Time(t) if plan.reachable_end_time.is_some_and(|end| *t >= end) => Err(short(plan)),
        ModelTarget::Name(_) => match plan.first_missing {
            Some(_) => Err(short(plan)),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}
