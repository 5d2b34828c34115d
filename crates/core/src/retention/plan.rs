//! The planner: which backups and which WAL objects `expire` (or `delete ID`) removes, as a
//! pure function of the repository's backups, pins, archive model, policy and the time.
//!
//! Being pure is the point: the same function answers `--dry-run`, the real run (which plans
//! again under the lock, so what it deletes is what the repository holds at that moment) and
//! the property tests, which apply plans to thousands of synthetic repositories and check that
//! what was promised is still restorable.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use crate::repository::state::{Pin, WalHorizon};
use crate::repository::summary::BackupSummary;
use crate::retention::policy::Policy;
use crate::retention::walkeep::{self, WalRange};
use crate::timeline::{ArchiveModel, TimelineWindows};
use crate::wal::WalFileName;

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no retention policy: [retention] in the configuration sets none of keep_full, recovery_window, keep_daily, keep_weekly, keep_monthly, keep_yearly, and no flag gives one; expire deletes nothing without a policy (it never means \"delete everything\")")]
    NoPolicy,
    #[error("backup {0} does not exist (or its catalog cannot be read)")]
    NotFound(String),
    #[error("backup {id} is pinned{}{}: run `pgvault unpin {id}` first if it really must go", until.map(|u| format!(" until {u}")).unwrap_or_default(), note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Pinned {
        id: String,
        until: Option<DateTime<Utc>>,
        note: Option<String>,
    },
    #[error("backup {id} is needed by {}: delete those first", by.join(", "))]
    DependedOn { id: String, by: Vec<String> },
}

/// Why a backup is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum KeepReason {
    /// The newest backup is always kept.
    Newest,
    /// Among the newest `keep_full` backups (1 = newest).
    KeepFull {
        rank: u32,
    },
    /// Needed so that every point of the recovery window stays restorable.
    RecoveryWindow,
    /// The newest backup of its day / ISO week / month / year.
    Daily {
        period: String,
    },
    Weekly {
        period: String,
    },
    Monthly {
        period: String,
    },
    Yearly {
        period: String,
    },
    Pinned {
        until: Option<DateTime<Utc>>,
        note: Option<String>,
    },
    /// A kept backup depends on it.
    ParentOf {
        child: String,
    },
    /// `delete` removes only the backup it was asked to.
    NotSelected,
}

impl KeepReason {
    /// Reasons whose backups keep continuous WAL from their start on (not only their own).
    pub fn is_continuous(&self) -> bool {
        matches!(
            self,
            KeepReason::Newest | KeepReason::KeepFull { .. } | KeepReason::RecoveryWindow
        )
    }
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepReason::Newest => write!(f, "newest"),
            KeepReason::KeepFull { rank } => write!(f, "keep_full #{rank}"),
            KeepReason::RecoveryWindow => write!(f, "recovery_window"),
            KeepReason::Daily { period } => write!(f, "daily {period}"),
            KeepReason::Weekly { period } => write!(f, "weekly {period}"),
            KeepReason::Monthly { period } => write!(f, "monthly {period}"),
            KeepReason::Yearly { period } => write!(f, "yearly {period}"),
            KeepReason::Pinned { until, note } => {
                write!(f, "pinned")?;
                if let Some(u) = until {
                    write!(f, " until {}", u.format("%Y-%m-%d %H:%M UTC"))?;
                }
                if let Some(n) = note {
                    write!(f, " ({n})")?;
                }
                Ok(())
            }
            KeepReason::ParentOf { child } => write!(f, "parent of {child}"),
            KeepReason::NotSelected => write!(f, "not selected"),
        }
    }
}

/// A kept backup and every rule that keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeptBackup {
    pub id: String,
    pub reasons: Vec<KeepReason>,
    /// Kept with continuous WAL from its start (else only its own start-to-stop WAL).
    pub continuous: bool,
}

/// A backup the plan removes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeletedBackup {
    pub id: String,
    pub stop_time: DateTime<Utc>,
    pub stored_size: u64,
    pub why: String,
}

/// A backup directory without a catalog: a backup that failed or was interrupted (or one whose
/// delete was), or one still being written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrphanDir {
    pub id: String,
    pub objects: usize,
    pub bytes: u64,
    /// The newest object's modification time.
    pub newest: DateTime<Utc>,
}

/// An orphan and whether it is old enough to remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedOrphan {
    #[serde(flatten)]
    pub dir: OrphanDir,
    pub remove: bool,
}

/// What the planner reads.
pub struct PlanInput<'a> {
    /// Complete backups with a readable catalog.
    pub backups: &'a [BackupSummary],
    /// Backups whose catalog cannot be read, `(id, why)`: never deleted, and while there are
    /// any no WAL is deleted either (which WAL they need is unknown).
    pub unreadable: &'a [(String, String)],
    pub pins: &'a [Pin],
    /// The archive as recovery sees it (built from `backups` and the WAL listing).
    pub model: &'a ArchiveModel,
    /// Every archived WAL object with its stored size.
    pub wal: &'a [(WalFileName, u64)],
    pub orphans: &'a [OrphanDir],
    pub now: DateTime<Utc>,
}

/// Everything `expire` (or `delete`) will do, and what is restorable before and after.
#[derive(Clone, Debug)]
pub struct ExpirePlan {
    pub policy: String,
    pub now: DateTime<Utc>,
    pub keep: Vec<KeptBackup>,
    pub delete_backups: Vec<DeletedBackup>,
    /// Exact WAL objects to delete, sorted by name.
    pub delete_wal: Vec<WalFileName>,
    /// `delete_wal` as runs per timeline, for display.
    pub wal_ranges: Vec<WalRange>,
    /// The WAL horizon to record before deleting WAL (`None`: no WAL is deleted).
    pub horizon: Option<WalHorizon>,
    pub window_before: Vec<TimelineWindows>,
    pub window_after: Vec<TimelineWindows>,
    pub orphans: Vec<PlannedOrphan>,
    /// Stored bytes of the deleted backups and WAL (orphans not included).
    pub bytes_freed: u64,
    /// What the plan held back and why (unreadable catalogs).
    pub warnings: Vec<String>,
}

impl ExpirePlan {
    pub fn is_noop(&self) -> bool {
        self.delete_backups.is_empty() && self.delete_wal.is_empty() && !self.orphans.iter().any(|o| o.remove)
    }
}

/// Backups oldest first by their end (time, then id).
fn by_age(backups: &[BackupSummary]) -> Vec<&BackupSummary> {
    let mut v: Vec<&BackupSummary> = backups.iter().collect();
    v.sort_by(|a, b| (a.stop_time, &a.id).cmp(&(b.stop_time, &b.id)));
    v
}

type Reasons = BTreeMap<String, Vec<KeepReason>>;

fn add(reasons: &mut Reasons, id: &str, r: KeepReason) {
    let v = reasons.entry(id.to_string()).or_default();
    if !v.contains(&r) {
        v.push(r);
    }
}

/// The newest backup of each of the `n` newest periods (as named by `period`) that have one.
fn keep_periods(
    reasons: &mut Reasons,
    newest_first: &[&BackupSummary],
    n: Option<u32>,
    period: impl Fn(DateTime<Utc>) -> String,
    reason: impl Fn(String) -> KeepReason,
) {
    let Some(n) = n else { return };
    let mut seen = BTreeSet::new();
    for b in newest_first {
        if seen.len() >= n as usize {
            break;
        }
        let p = period(b.stop_time);
        if seen.insert(p.clone()) {
            add(reasons, &b.id, reason(p));
        }
    }
}

/// Which backups `policy` keeps, and why. Pins, parents and the newest are added here too.
fn select(input: &PlanInput<'_>, policy: &Policy) -> Reasons {
    let oldest_first = by_age(input.backups);
    let newest_first: Vec<&BackupSummary> = oldest_first.iter().rev().copied().collect();
    let mut reasons = Reasons::new();
    if let Some(b) = newest_first.first() {
        add(&mut reasons, &b.id, KeepReason::Newest);
    }
    if let Some(n) = policy.keep_full {
        // Full backups are counted; the incremental backups built on a kept full (its chain)
        // are kept with it, so expiring a full expires its dependents, never the reverse.
        let fulls: Vec<&BackupSummary> = newest_first
            .iter()
            .filter(|b| !b.kind.is_incremental())
            .take(n as usize)
            .copied()
            .collect();
        for b in &newest_first {
            let root = chain_root(input.backups, b);
            if let Some(rank) = fulls.iter().position(|f| f.id == root) {
                add(&mut reasons, &b.id, KeepReason::KeepFull { rank: rank as u32 + 1 });
            }
        }
    }
    if let Some(d) = policy.recovery_window {
        let boundary = chrono::Duration::from_std(d).map_or(DateTime::<Utc>::MIN_UTC, |d| {
            input.now.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
        });
        // The newest backup consistent at or before the boundary, and every one after it.
        let anchor = oldest_first.iter().rposition(|b| b.stop_time <= boundary).unwrap_or(0);
        for b in &oldest_first[anchor..] {
            add(&mut reasons, &b.id, KeepReason::RecoveryWindow);
        }
    }
    keep_periods(
        &mut reasons,
        &newest_first,
        policy.keep_daily,
        |t| t.format("%Y-%m-%d").to_string(),
        |period| KeepReason::Daily { period },
    );
    keep_periods(
        &mut reasons,
        &newest_first,
        policy.keep_weekly,
        |t| {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        },
        |period| KeepReason::Weekly { period },
    );
    keep_periods(
        &mut reasons,
        &newest_first,
        policy.keep_monthly,
        |t| t.format("%Y-%m").to_string(),
        |period| KeepReason::Monthly { period },
    );
    keep_periods(
        &mut reasons,
        &newest_first,
        policy.keep_yearly,
        |t| t.format("%Y").to_string(),
        |period| KeepReason::Yearly { period },
    );
    add_pins_and_parents(input, &mut reasons);
    reasons
}

/// The id of the full backup at the bottom of `b`'s chain (`b` itself for a full backup, or the
/// oldest ancestor present when a parent is missing).
fn chain_root(backups: &[BackupSummary], b: &BackupSummary) -> String {
    let mut cur = b;
    for _ in 0..backups.len() {
        if !cur.kind.is_incremental() {
            break;
        }
        match cur.parent.as_deref().and_then(|p| backups.iter().find(|x| x.id == p)) {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    cur.id.clone()
}

fn add_pins_and_parents(input: &PlanInput<'_>, reasons: &mut Reasons) {
    for pin in input.pins.iter().filter(|p| p.active_at(input.now)) {
        if input.backups.iter().any(|b| b.id == pin.backup) {
            add(
                reasons,
                &pin.backup,
                KeepReason::Pinned {
                    until: pin.until,
                    note: pin.note.clone(),
                },
            );
        }
    }
    // Parents, transitively (a chain is followed at most once per backup).
    let mut todo: Vec<String> = reasons.keys().cloned().collect();
    while let Some(child) = todo.pop() {
        let Some(parent) = input
            .backups
            .iter()
            .find(|b| b.id == child)
            .and_then(|b| b.parent.clone())
        else {
            continue;
        };
        if !input.backups.iter().any(|b| b.id == parent) {
            continue;
        }
        let fresh = !reasons.contains_key(&parent);
        add(reasons, &parent, KeepReason::ParentOf { child });
        if fresh {
            todo.push(parent);
        }
    }
}

/// The plan `expire` carries out under `policy`.
pub fn plan_expire(input: &PlanInput<'_>, policy: &Policy) -> Result<ExpirePlan, PlanError> {
    if policy.is_empty() {
        return Err(PlanError::NoPolicy);
    }
    let reasons = select(input, policy);
    let mut plan = assemble(input, policy.describe(), reasons, "not kept by any rule", true);
    let min_age = chrono::Duration::from_std(policy.orphan_min_age).unwrap_or(chrono::Duration::MAX);
    plan.orphans = input
        .orphans
        .iter()
        .map(|o| PlannedOrphan {
            dir: o.clone(),
            remove: input.now.signed_duration_since(o.newest) >= min_age,
        })
        .collect();
    Ok(plan)
}

/// The plan of `delete id`: that backup only; WAL is left for `expire` to judge.
pub fn plan_delete(input: &PlanInput<'_>, id: &str) -> Result<ExpirePlan, PlanError> {
    if !input.backups.iter().any(|b| b.id == id) {
        return Err(PlanError::NotFound(id.to_string()));
    }
    if let Some(pin) = input.pins.iter().find(|p| p.backup == id && p.active_at(input.now)) {
        return Err(PlanError::Pinned {
            id: id.to_string(),
            until: pin.until,
            note: pin.note.clone(),
        });
    }
    let by: Vec<String> = input
        .backups
        .iter()
        .filter(|b| b.parent.as_deref() == Some(id))
        .map(|b| b.id.clone())
        .collect();
    if !by.is_empty() {
        return Err(PlanError::DependedOn { id: id.to_string(), by });
    }
    let reasons: Reasons = input
        .backups
        .iter()
        .filter(|b| b.id != id)
        .map(|b| (b.id.clone(), vec![KeepReason::NotSelected]))
        .collect();
    Ok(assemble(input, format!("delete {id}"), reasons, "asked for", false))
}

/// Turns the kept set into the full plan: deleted backups, WAL, horizon, windows.
fn assemble(input: &PlanInput<'_>, policy: String, reasons: Reasons, why: &str, expire_wal: bool) -> ExpirePlan {
    let keep: Vec<KeptBackup> = by_age(input.backups)
        .into_iter()
        .filter_map(|b| {
            let r = reasons.get(&b.id)?;
            Some(KeptBackup {
                id: b.id.clone(),
                continuous: r.iter().any(KeepReason::is_continuous),
                reasons: r.clone(),
            })
        })
        .collect();
    let delete_backups: Vec<DeletedBackup> = by_age(input.backups)
        .into_iter()
        .filter(|b| !reasons.contains_key(&b.id))
        .map(|b| DeletedBackup {
            id: b.id.clone(),
            stop_time: b.stop_time,
            stored_size: b.stored_size,
            why: why.to_string(),
        })
        .collect();
    let kept_summaries: Vec<&BackupSummary> = input.backups.iter().filter(|b| reasons.contains_key(&b.id)).collect();
    let mut warnings = Vec::new();
    for (id, why) in input.unreadable {
        warnings.push(format!(
            "backup {id} has an unreadable catalog ({why}): it is left alone"
        ));
    }
    let (delete_wal, horizon) = if expire_wal && input.unreadable.is_empty() {
        walkeep::wal_to_delete(input, &keep, &kept_summaries)
    } else {
        if expire_wal {
            warnings.push(
                "no WAL is deleted while a backup's catalog cannot be read (which WAL it needs is unknown): repair or delete that backup".into(),
            );
        }
        (Vec::new(), None)
    };
    let wal_ranges = walkeep::ranges(input, &delete_wal);
    let bytes_freed =
        delete_backups.iter().map(|b| b.stored_size).sum::<u64>() + wal_ranges.iter().map(|r| r.bytes).sum::<u64>();
    let window_after = walkeep::windows_after(input, &kept_summaries, &delete_wal);
    ExpirePlan {
        policy,
        now: input.now,
        keep,
        delete_backups,
        delete_wal,
        wal_ranges,
        horizon,
        window_before: input.model.windows_by_timeline(),
        window_after,
        orphans: Vec::new(),
        bytes_freed,
        warnings,
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod chain_tests;
