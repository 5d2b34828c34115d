//! When `pgvault schedule` runs which job: the cron schedules of `[schedule]`, the missed-run
//! policy and the no-overlap rule, as a state machine driven by an injected clock.
//!
//! The daemon (in the CLI) only sleeps until [`Scheduler::next_wake`], asks
//! [`Scheduler::take_due`] for a job, runs it and reports back with [`Scheduler::finish`]; every
//! decision is here, so it is unit-tested without waiting for real time to pass.
//!
//! Policy (docs/SCHEDULE.md):
//! - one job runs at a time, whatever its kind: a job that falls due while another runs waits for
//!   it and then runs once;
//! - slots of a job that pass while it runs (a backup longer than its interval) are skipped, and
//!   counted so the daemon can log them;
//! - after downtime (the daemon was stopped, the machine suspended) a job whose slot passed since
//!   its last known run runs once, not once per missed slot;
//! - backup kinds due together (the same minute, or both pending after downtime): the bigger one
//!   runs (full > diff > incr) and the smaller ones skip that slot, as pgBackRest users expect.

pub mod cron;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};

use crate::repository::catalog::BackupKind;

pub use cron::{CronError, CronExpr};

/// The jobs the daemon can run, in the order they run when due together (the backups biggest
/// first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    /// A full backup (`[schedule] backup`).
    Backup,
    /// A differential backup (`[schedule] backup_diff`).
    BackupDiff,
    /// An incremental backup (`[schedule] backup_incr`).
    BackupIncr,
    Expire,
    Verify,
    Drill,
}

impl JobKind {
    pub const ALL: [JobKind; 6] = [
        JobKind::Backup,
        JobKind::BackupDiff,
        JobKind::BackupIncr,
        JobKind::Expire,
        JobKind::Verify,
        JobKind::Drill,
    ];

    /// The `[schedule]` key and the `kind` label of the job metrics.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::BackupDiff => "backup_diff",
            JobKind::BackupIncr => "backup_incr",
            JobKind::Expire => "expire",
            JobKind::Verify => "verify",
            JobKind::Drill => "drill",
        }
    }

    /// The kind of backup this job takes (`None`: not a backup job).
    pub fn backup_kind(self) -> Option<BackupKind> {
        match self {
            JobKind::Backup => Some(BackupKind::Full),
            JobKind::BackupDiff => Some(BackupKind::Diff),
            JobKind::BackupIncr => Some(BackupKind::Incr),
            JobKind::Expire | JobKind::Verify | JobKind::Drill => None,
        }
    }

    /// The backup job of `kind`.
    pub fn of_backup(kind: BackupKind) -> JobKind {
        match kind {
            BackupKind::Full => JobKind::Backup,
            BackupKind::Diff => JobKind::BackupDiff,
            BackupKind::Incr => JobKind::BackupIncr,
        }
    }

    /// Whether both are backup jobs and `self` wins over `other` when they fall due together
    /// (full > diff > incr).
    pub fn supersedes(self, other: JobKind) -> bool {
        self.backup_kind().is_some() && other.backup_kind().is_some() && self < other
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The wall clock cron expressions are read in (`[schedule] timezone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleZone {
    Utc,
    /// The machine's local time zone (`TZ`, `/etc/localtime`).
    Local,
    Named(chrono_tz::Tz),
}

impl ScheduleZone {
    /// `UTC`, `local`, or an IANA name such as `Europe/Berlin`.
    pub fn parse(s: &str) -> Result<ScheduleZone, String> {
        match s {
            "UTC" | "utc" | "Etc/UTC" => Ok(ScheduleZone::Utc),
            "local" => Ok(ScheduleZone::Local),
            other => other
                .parse::<chrono_tz::Tz>()
                .map(ScheduleZone::Named)
                .map_err(|_| format!("'{other}' is not UTC, local, or an IANA time zone name (e.g. Europe/Berlin)")),
        }
    }

    pub fn next_after(&self, expr: &CronExpr, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            ScheduleZone::Utc => expr.next_after(after, &Utc),
            ScheduleZone::Local => expr.next_after(after, &chrono::Local),
            ScheduleZone::Named(tz) => expr.next_after(after, tz),
        }
    }

    pub fn last_at_or_before(&self, expr: &CronExpr, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            ScheduleZone::Utc => expr.last_at_or_before(at, &Utc),
            ScheduleZone::Local => expr.last_at_or_before(at, &chrono::Local),
            ScheduleZone::Named(tz) => expr.last_at_or_before(at, tz),
        }
    }

    /// `at` as wall-clock text in this zone (for `--print` and logs).
    pub fn format(&self, at: DateTime<Utc>) -> String {
        match self {
            ScheduleZone::Utc => at.format("%Y-%m-%d %H:%M %Z").to_string(),
            ScheduleZone::Local => at
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M %:z")
                .to_string(),
            ScheduleZone::Named(tz) => at.with_timezone(tz).format("%Y-%m-%d %H:%M %Z").to_string(),
        }
    }
}

/// One scheduled job: what and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub kind: JobKind,
    pub cron: CronExpr,
}

/// A job the daemon should start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub kind: JobKind,
    /// The slot being served (the newest one that passed).
    pub slot: DateTime<Utc>,
    /// Earlier slots folded into this run (downtime, or waiting for another job).
    pub coalesced: u32,
    /// Smaller backup jobs that were due too and skip their slot because this bigger backup runs
    /// (full > diff > incr): each with the slot it skips.
    pub superseded: Vec<(JobKind, DateTime<Utc>)>,
}

#[derive(Debug, Clone)]
struct JobState {
    job: Job,
    /// `None`: the expression never matches again.
    next_due: Option<DateTime<Utc>>,
}

/// The daemon's schedule state.
#[derive(Debug, Clone)]
pub struct Scheduler {
    zone: ScheduleZone,
    jobs: Vec<JobState>,
    running: Option<JobKind>,
    /// Smaller backup slots that passed while a bigger backup ran, served by it (see
    /// [`Self::finish`]), until the daemon takes them for its log.
    superseded: Vec<(JobKind, DateTime<Utc>)>,
}

/// Counts slots in `(from, to]`, stopping at a sane maximum.
fn slots_between(zone: &ScheduleZone, cron: &CronExpr, from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    let mut n = 0;
    let mut at = from;
    while n < 100_000 {
        match zone.next_after(cron, at) {
            Some(next) if next <= to => {
                n += 1;
                at = next;
            }
            _ => break,
        }
    }
    n
}

impl Scheduler {
    /// The state at start-up, `now`. `last_run(kind)` is when the job last ran, when that is
    /// known (from the repository: the newest backup, verify or drill report): a job whose slot
    /// passed since then is due at once (one run); otherwise it waits for its next slot.
    pub fn new(
        zone: ScheduleZone,
        mut jobs: Vec<Job>,
        now: DateTime<Utc>,
        last_run: impl Fn(JobKind) -> Option<DateTime<Utc>>,
    ) -> Scheduler {
        jobs.sort_by_key(|j| j.kind);
        let jobs = jobs
            .into_iter()
            .map(|job| {
                let missed = last_run(job.kind)
                    .and_then(|last| zone.next_after(&job.cron, last))
                    .filter(|slot| *slot <= now);
                let next_due = missed.or_else(|| zone.next_after(&job.cron, now));
                JobState { job, next_due }
            })
            .collect();
        Scheduler {
            zone,
            jobs,
            running: None,
            superseded: Vec::new(),
        }
    }

    pub fn zone(&self) -> ScheduleZone {
        self.zone
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The job running now, if any.
    pub fn running(&self) -> Option<JobKind> {
        self.running
    }

    /// When the next job falls due (`None`: nothing will ever be due). While a job runs, the
    /// next due time of the others is still reported; [`Self::take_due`] holds them back.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.jobs
            .iter()
            .filter(|j| Some(j.job.kind) != self.running)
            .filter_map(|j| j.next_due)
            .min()
    }

    /// The job to start at `now`, if one is due and none is running; it is then running until
    /// [`Self::finish`]. Jobs due together start in [`JobKind`] order, one after the other, except
    /// backups: of the backup jobs due, only the biggest runs and the others skip their slot
    /// (listed in [`Due::superseded`], already moved to their next slot).
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Option<Due> {
        if self.running.is_some() {
            return None;
        }
        let zone = self.zone;
        let is_due = |j: &JobState| j.next_due.is_some_and(|d| d <= now);
        let mut kind = self
            .jobs
            .iter()
            .filter(|j| is_due(j))
            .min_by_key(|j| (j.next_due, j.job.kind))?
            .job
            .kind;
        if kind.backup_kind().is_some() {
            // The biggest backup due wins; JobKind orders the backups biggest first.
            kind = self
                .jobs
                .iter()
                .filter(|j| is_due(j) && j.job.kind.backup_kind().is_some())
                .map(|j| j.job.kind)
                .min()
                .unwrap_or(kind);
        }
        let mut superseded = Vec::new();
        for j in self.jobs.iter_mut().filter(|j| kind.supersedes(j.job.kind)) {
            if let Some(slot) = j.next_due.filter(|d| *d <= now) {
                let newest = zone.last_at_or_before(&j.job.cron, now).unwrap_or(slot);
                superseded.push((j.job.kind, newest));
                j.next_due = zone.next_after(&j.job.cron, now);
            }
        }
        let state = self.jobs.iter().find(|j| j.job.kind == kind)?;
        let first = state.next_due?;
        let later = slots_between(&zone, &state.job.cron, first, now);
        let slot = if later > 0 {
            zone.last_at_or_before(&state.job.cron, now).unwrap_or(first)
        } else {
            first
        };
        self.running = Some(kind);
        Some(Due {
            kind,
            slot,
            coalesced: later,
            superseded,
        })
    }

    /// The bigger backup job that also falls due at `at` and so runs instead of `kind` (`None`:
    /// `kind` runs at `at`, as far as the schedule tells).
    pub fn superseded_at(&self, kind: JobKind, at: DateTime<Utc>) -> Option<JobKind> {
        let before = at - chrono::Duration::minutes(1);
        self.jobs
            .iter()
            .filter(|j| j.job.kind.supersedes(kind))
            .find(|j| self.zone.next_after(&j.job.cron, before) == Some(at))
            .map(|j| j.job.kind)
    }

    /// The running job ended at `now` (whatever its outcome, including "the repository lock was
    /// held": it then waits for its next slot). Returns how many of its slots passed while it ran
    /// and are skipped. A backup also serves the slots of smaller backups that passed while it
    /// ran: they are skipped too, and listed by [`Self::take_superseded`].
    pub fn finish(&mut self, kind: JobKind, started: DateTime<Utc>, now: DateTime<Utc>) -> u32 {
        if self.running == Some(kind) {
            self.running = None;
        }
        let zone = self.zone;
        for j in self.jobs.iter_mut().filter(|j| kind.supersedes(j.job.kind)) {
            if let Some(slot) = j.next_due.filter(|d| *d <= now) {
                let newest = zone.last_at_or_before(&j.job.cron, now).unwrap_or(slot);
                self.superseded.push((j.job.kind, newest));
                j.next_due = zone.next_after(&j.job.cron, now);
            }
        }
        let Some(state) = self.jobs.iter_mut().find(|j| j.job.kind == kind) else {
            return 0;
        };
        let skipped = slots_between(&zone, &state.job.cron, started, now);
        state.next_due = zone.next_after(&state.job.cron, now);
        skipped
    }

    /// The smaller backup slots the last [`Self::finish`] of a bigger backup skipped, each with
    /// its newest slot (emptied by the call).
    pub fn take_superseded(&mut self) -> Vec<(JobKind, DateTime<Utc>)> {
        std::mem::take(&mut self.superseded)
    }

    /// The next `n` run times of `kind` after `now` (for `pgvault schedule --print` and the
    /// metrics): slots where a bigger backup runs instead are left out.
    pub fn upcoming(&self, kind: JobKind, now: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.upcoming_slots(kind, now, n, false)
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    /// The next `n` slots of `kind` after `now`, each with the bigger backup job that runs
    /// instead of it at that slot (`with_superseded`: those slots are listed, and count in `n`).
    pub fn upcoming_slots(
        &self,
        kind: JobKind,
        now: DateTime<Utc>,
        n: usize,
        with_superseded: bool,
    ) -> Vec<(DateTime<Utc>, Option<JobKind>)> {
        let Some(state) = self.jobs.iter().find(|j| j.job.kind == kind) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n);
        if let Some(d) = state.next_due.filter(|d| *d <= now) {
            out.push((d, None));
        }
        let mut at = now;
        // Bounded: a job superseded at every slot (the same cron as a bigger backup) has none.
        for _ in 0..10_000 {
            if out.len() >= n {
                break;
            }
            let Some(next) = self.zone.next_after(&state.job.cron, at) else {
                break;
            };
            at = next;
            let by = self.superseded_at(kind, next);
            if by.is_none() || with_superseded {
                out.push((next, by));
            }
        }
        out
    }

    /// The scheduled jobs, in [`JobKind`] order.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter().map(|j| &j.job)
    }

    /// The longest gap between two consecutive runs of `kind` over the coming `horizon_days`
    /// (the age a backup may reach while the schedule is kept; exported for the alert rules).
    /// Slots where a bigger backup runs instead do not count as runs of `kind`.
    pub fn max_interval(&self, kind: JobKind, now: DateTime<Utc>, horizon_days: i64) -> Option<chrono::Duration> {
        let state = self.jobs.iter().find(|j| j.job.kind == kind)?;
        let bigger: Vec<&CronExpr> = self
            .jobs
            .iter()
            .filter(|j| j.job.kind.supersedes(kind))
            .map(|j| &j.job.cron)
            .collect();
        max_interval_between(&self.zone, &state.job.cron, &bigger, now, horizon_days)
    }
}

/// The longest gap between consecutive runs of `cron` from `now` over `horizon_days`.
pub fn max_interval(
    zone: &ScheduleZone,
    cron: &CronExpr,
    now: DateTime<Utc>,
    horizon_days: i64,
) -> Option<chrono::Duration> {
    max_interval_between(zone, cron, &[], now, horizon_days)
}

/// The longest gap between consecutive runs of `cron` from `now` over `horizon_days`, where a
/// slot that one of `bigger` also matches is not a run (a bigger backup runs instead).
pub fn max_interval_between(
    zone: &ScheduleZone,
    cron: &CronExpr,
    bigger: &[&CronExpr],
    now: DateTime<Utc>,
    horizon_days: i64,
) -> Option<chrono::Duration> {
    let end = now + chrono::Duration::days(horizon_days);
    let runs_at = |at: DateTime<Utc>| {
        let before = at - chrono::Duration::minutes(1);
        !bigger.iter().any(|b| zone.next_after(b, before) == Some(at))
    };
    let mut at = now;
    let mut prev = None;
    let mut best = chrono::Duration::zero();
    // Bounded: an every-minute schedule over a long horizon is cut off, its gap is known by then.
    for _ in 0..20_000 {
        let Some(next) = zone.next_after(cron, at) else { break };
        at = next;
        if !runs_at(next) {
            continue;
        }
        if let Some(p) = prev {
            best = best.max(next - p);
            if next > end {
                break;
            }
        }
        prev = Some(next);
    }
    (best > chrono::Duration::zero()).then_some(best)
}
