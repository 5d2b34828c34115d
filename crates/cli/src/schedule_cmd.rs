//! `pgvault schedule`: the foreground daemon that runs the `[schedule]` jobs and serves the
//! `[metrics]` endpoint (see docs/SCHEDULE.md).
//!
//! Every decision of when to run what is the library's [`Scheduler`]; this file sleeps, runs the
//! jobs through the same library calls as the manual commands (progress off), logs one line per
//! run, keeps the job counters for the metrics, and handles signals: the first SIGTERM/SIGINT
//! stops starting jobs and lets the running one finish, a second one interrupts it (the engine
//! leaves the repository consistent when interrupted), then the daemon exits 0.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use pgvault_core::config::Config;
use pgvault_core::drill;
use pgvault_core::metrics::{self, JobMetric};
use pgvault_core::repository::Repository;
use pgvault_core::schedule::{JobKind, ScheduleZone, Scheduler};
use pgvault_core::verify;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::commands::Context;
use crate::metrics_cmd;
use crate::schedule_jobs::{self, log_run, Ran};
use crate::verify_cmd::ExitStatus;

/// Exit status when nothing is scheduled or the configuration is invalid.
const EXIT_USAGE: u8 = 2;
/// The longest the loop sleeps at once, so a clock jump (suspend, NTP) is noticed in time.
const MAX_SLEEP: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct ScheduleArgs {
    /// Print each job's next run times and exit.
    #[arg(long)]
    print: bool,
    /// How many run times --print shows per job.
    #[arg(long, default_value_t = 5, value_name = "N")]
    count: usize,
    /// With --print: machine-readable output.
    #[arg(long)]
    json: bool,
}

pub async fn schedule(ctx: &Context, args: ScheduleArgs) -> Result<()> {
    let config = match ctx.config() {
        Ok(c) => c,
        Err(e) => {
            crate::logging::error(&format!("{e:#}"), None);
            return Err(ExitStatus(EXIT_USAGE).into());
        }
    };
    let (jobs, zone) = match (config.schedule.jobs(), config.schedule.zone()) {
        (Ok(j), Ok(z)) => (j, z),
        (Err((key, why)), _) | (_, Err((key, why))) => {
            crate::logging::error(&format!("{}: key {key}: {why}", config.source.display()), None);
            return Err(ExitStatus(EXIT_USAGE).into());
        }
    };
    if jobs.is_empty() {
        crate::logging::error(
            &format!(
                "nothing is scheduled: add a [schedule] section to {}",
                config.source.display()
            ),
            Some("e.g. backup = \"0 2 * * *\""),
        );
        return Err(ExitStatus(EXIT_USAGE).into());
    }
    let now = Utc::now();
    if args.print {
        let sched = Scheduler::new(zone, jobs, now, |_| None);
        return print(&sched, now, args.count.max(1), args.json);
    }
    run(config, zone, jobs).await
}

fn print(sched: &Scheduler, now: DateTime<Utc>, count: usize, as_json: bool) -> Result<()> {
    let zone = sched.zone();
    if as_json {
        let jobs: Vec<_> = sched
            .jobs()
            .map(|j| {
                let slots = sched.upcoming_slots(j.kind, now, count, true);
                let skipped: Vec<_> = slots
                    .iter()
                    .filter_map(|(t, by)| by.map(|by| json!({ "at": t.to_rfc3339(), "runs_instead": by.name() })))
                    .collect();
                json!({
                    "job": j.kind.name(),
                    "cron": j.cron.as_str(),
                    "next": sched.upcoming(j.kind, now, count).iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
                    "skipped": skipped,
                })
            })
            .collect();
        crate::display::print_json(&json!({ "jobs": jobs }))?;
        return Ok(());
    }
    for j in sched.jobs() {
        println!("{} ({})", j.kind, j.cron.as_str());
        for (t, by) in sched.upcoming_slots(j.kind, now, count, true) {
            match by {
                None => println!("  {}", zone.format(t)),
                Some(by) => println!("  {}  skipped: {by} runs then", zone.format(t)),
            }
        }
    }
    Ok(())
}

/// When each job last ran, as far as the repository tells (for the missed-run policy). A backup
/// job's slot is served by a backup of its kind or a bigger one (a full serves a pending incr).
async fn last_runs(repo: &Repository) -> Vec<(JobKind, DateTime<Utc>)> {
    let mut out = Vec::new();
    if let Ok(listing) = repo.backup_summaries().await {
        for job in [JobKind::Backup, JobKind::BackupDiff, JobKind::BackupIncr] {
            let newest = listing
                .backups
                .iter()
                .filter(|b| {
                    let taken = JobKind::of_backup(b.kind);
                    taken == job || taken.supersedes(job)
                })
                .map(|b| b.start_time)
                .max();
            if let Some(t) = newest {
                out.push((job, t));
            }
        }
    }
    if let Ok(Some(v)) = verify::record::last(repo).await {
        out.push((JobKind::Verify, v.finished_at));
    }
    if let Ok(Some(d)) = drill::last_report(repo).await {
        out.push((JobKind::Drill, d.started_at));
    }
    out
}

struct Daemon {
    config: Config,
    repo: Repository,
    jobs: Mutex<Vec<JobMetric>>,
    text: metrics_cmd::Shared,
    /// Whether `/metrics` is served (nothing to refresh otherwise).
    serving: bool,
}

async fn run(
    config: Config,
    zone: pgvault_core::schedule::ScheduleZone,
    jobs: Vec<pgvault_core::schedule::Job>,
) -> Result<()> {
    let repo = Repository::open(&config).await?;
    let listen = config.metrics.listen_addr().map_err(anyhow::Error::msg)?;
    let refresh = config.metrics.refresh().map_err(anyhow::Error::msg)?;
    let now = Utc::now();
    let known = last_runs(&repo).await;
    let mut sched = Scheduler::new(zone, jobs, now, |k| {
        known.iter().find(|(j, _)| *j == k).map(|(_, t)| *t)
    });
    let daemon = Arc::new(Daemon {
        jobs: Mutex::new(
            sched
                .jobs()
                .map(|j| JobMetric {
                    job: j.kind.name().to_string(),
                    ..JobMetric::default()
                })
                .collect(),
        ),
        config,
        repo,
        text: Arc::new(RwLock::new(String::new())),
        serving: listen.is_some(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    spawn_signals(stop_tx, abort_tx)?;
    let mut tasks = Vec::new();
    if let Some(addr) = listen {
        daemon.set_next_runs(&sched, now);
        daemon.refresh().await;
        tasks.push(metrics_cmd::serve(addr, daemon.text.clone(), stop_rx.clone()).await?);
        tasks.push(spawn_refresher(daemon.clone(), refresh, stop_rx.clone()));
    }
    for j in sched.jobs() {
        tracing::info!(
            "scheduled {} ({}), next run {}",
            j.kind,
            j.cron.as_str(),
            sched
                .upcoming(j.kind, now, 1)
                .first()
                .map_or("never".into(), |t| zone.format(*t))
        );
    }
    daemon.main_loop(&mut sched, stop_rx, abort_rx).await;
    for t in tasks {
        t.abort();
    }
    tracing::info!("pgvault schedule stopped");
    eprintln!("pgvault: schedule stopped");
    Ok(())
}

fn spawn_signals(stop: watch::Sender<bool>, abort: watch::Sender<bool>) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            count += 1;
            if count == 1 {
                tracing::warn!("{name}: starting no more jobs; a running job finishes (send again to interrupt it)");
                let _ = stop.send(true);
            } else {
                tracing::warn!("{name} again: interrupting the running job");
                let _ = abort.send(true);
            }
        }
    });
    Ok(())
}

fn spawn_refresher(
    daemon: Arc<Daemon>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stopped = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopped {
                return;
            }
            daemon.refresh().await;
        }
    })
}

impl Daemon {
    /// Re-reads the repository and the server and re-renders the metrics.
    async fn refresh(&self) {
        if !self.serving {
            return;
        }
        let mut snap = metrics::collect(&self.config, Some(&self.repo), true, Utc::now()).await;
        snap.jobs = self.jobs.lock().map(|j| j.clone()).unwrap_or_default();
        let text = metrics::render(&snap);
        if let Ok(mut t) = self.text.write() {
            *t = text;
        }
    }

    fn set_next_runs(&self, sched: &Scheduler, now: DateTime<Utc>) {
        if let Ok(mut jobs) = self.jobs.lock() {
            for j in jobs.iter_mut() {
                if let Some(k) = JobKind::ALL.iter().find(|k| k.name() == j.job) {
                    j.next_run = sched.upcoming(*k, now, 1).first().copied();
                }
            }
        }
    }

    /// Logs and counts backup slots not run because a bigger backup (`by`) ran then.
    fn superseded(&self, slots: &[(JobKind, DateTime<Utc>)], by: JobKind, zone: ScheduleZone) {
        for (small, slot) in slots {
            tracing::info!(
                job = small.name(),
                outcome = "superseded",
                "job {small}: skipping its slot of {}: job {by} runs then (full > diff > incr)",
                zone.format(*slot)
            );
            if let Ok(mut jobs) = self.jobs.lock() {
                if let Some(m) = jobs.iter_mut().find(|m| m.job == small.name()) {
                    m.skipped += 1;
                }
            }
        }
    }

    fn record(&self, kind: JobKind, ran: &Ran, skipped: u32, end: DateTime<Utc>, took: Duration) {
        let Ok(mut jobs) = self.jobs.lock() else { return };
        let Some(m) = jobs.iter_mut().find(|m| m.job == kind.name()) else {
            return;
        };
        m.skipped += u64::from(skipped);
        match ran {
            Ran::Busy(_) => m.skipped += 1,
            Ran::Ok(_) | Ran::Failed(_) => {
                m.runs += 1;
                let ok = matches!(ran, Ran::Ok(_));
                if !ok {
                    m.failures += 1;
                }
                m.last_success = Some(ok);
                m.last_end = Some(end);
                m.last_duration_seconds = Some(took.as_secs_f64());
            }
        }
    }

    async fn main_loop(&self, sched: &mut Scheduler, stop: watch::Receiver<bool>, mut abort: watch::Receiver<bool>) {
        let zone = sched.zone();
        loop {
            if *stop.borrow() {
                return;
            }
            let now = Utc::now();
            if let Some(due) = sched.take_due(now) {
                if due.coalesced > 0 {
                    tracing::warn!(
                        "job {}: {} earlier slot(s) missed (downtime or another job running): running once for the slot of {}",
                        due.kind,
                        due.coalesced,
                        zone.format(due.slot)
                    );
                }
                self.superseded(&due.superseded, due.kind, zone);
                let started = Instant::now();
                let ran = tokio::select! {
                    r = schedule_jobs::run_job(&self.config, &self.repo, due.kind) => r,
                    _ = async { abort.wait_for(|a| *a).await.is_ok() } => Ran::Failed("interrupted by a second signal".into()),
                };
                let end = Utc::now();
                let took = started.elapsed();
                let skipped = sched.finish(due.kind, now, end);
                log_run(due.kind, &ran, took, skipped);
                self.superseded(&sched.take_superseded(), due.kind, zone);
                self.record(due.kind, &ran, skipped, end, took);
                self.set_next_runs(sched, end);
                self.refresh().await;
                continue;
            }
            let wait = sched
                .next_wake()
                .map(|w| (w - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
