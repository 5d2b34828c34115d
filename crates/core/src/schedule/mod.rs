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
//!   its last known run runs once, not once per missed slot.

pub mod cron;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};

pub use cron::{CronError, CronExpr};

/// The jobs the daemon can run, in the order they run when due together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    Backup,
    Expire,
    Verify,
    Drill,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [JobKind::Backup, JobKind::Expire, JobKind::Verify, JobKind::Drill];

    /// The `[schedule]` key and the `job` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Expire => "expire",
            JobKind::Verify => "verify",
            JobKind::Drill => "drill",
        }
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
    /// [`Self::finish`]. Jobs due together start in [`JobKind`] order, one after the other.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Option<Due> {
        if self.running.is_some() {
            return None;
        }
        let zone = self.zone;
        let state = self
            .jobs
            .iter_mut()
            .filter(|j| j.next_due.is_some_and(|d| d <= now))
            .min_by_key(|j| (j.next_due, j.job.kind))?;
        let first = state.next_due?;
        let later = slots_between(&zone, &state.job.cron, first, now);
        let slot = if later > 0 {
            zone.last_at_or_before(&state.job.cron, now).unwrap_or(first)
        } else {
            first
        };
        self.running = Some(state.job.kind);
        Some(Due {
            kind: state.job.kind,
            slot,
            coalesced: later,
        })
    }

    /// The running job ended at `now` (whatever its outcome, including "the repository lock was
    /// held": it then waits for its next slot). Returns how many of its slots passed while it ran
    /// and are skipped.
    pub fn finish(&mut self, kind: JobKind, started: DateTime<Utc>, now: DateTime<Utc>) -> u32 {
        if self.running == Some(kind) {
            self.running = None;
        }
        let zone = self.zone;
        let Some(state) = self.jobs.iter_mut().find(|j| j.job.kind == kind) else {
            return 0;
        };
        let skipped = slots_between(&zone, &state.job.cron, started, now);
        state.next_due = zone.next_after(&state.job.cron, now);
        skipped
    }

    /// The next `n` run times of `kind` after `now` (for `pgvault schedule --print`).
    pub fn upcoming(&self, kind: JobKind, now: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let Some(state) = self.jobs.iter().find(|j| j.job.kind == kind) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n);
        if let Some(d) = state.next_due.filter(|d| *d <= now) {
            out.push(d);
        }
        let mut at = now;
        while out.len() < n {
            match self.zone.next_after(&state.job.cron, at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
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
    pub fn max_interval(&self, kind: JobKind, now: DateTime<Utc>, horizon_days: i64) -> Option<chrono::Duration> {
        let state = self.jobs.iter().find(|j| j.job.kind == kind)?;
        max_interval(&self.zone, &state.job.cron, now, horizon_days)
    }
}

/// The longest gap between consecutive runs of `cron` from `now` over `horizon_days`.
pub fn max_interval(
    zone: &ScheduleZone,
    cron: &CronExpr,
    now: DateTime<Utc>,
    horizon_days: i64,
) -> Option<chrono::Duration> {
    let end = now + chrono::Duration::days(horizon_days);
    let mut prev = zone.next_after(cron, now)?;
    let mut best = chrono::Duration::zero();
    // Bounded: an every-minute schedule over a long horizon is cut off, its gap is known by then.
    for _ in 0..20_000 {
        let Some(next) = zone.next_after(cron, prev) else { break };
        best = best.max(next - prev);
        if next > end {
            break;
        }
        prev = next;
    }
    (best > chrono::Duration::zero()).then_some(best)
}
