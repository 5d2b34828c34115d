//! `pgvault drill`: proves that a backup restores. It restores a backup into a private sandbox
//! (the ordinary restore plan and execute), seals and starts a throwaway PostgreSQL on it, waits
//! for recovery to reach the target and promote, checks the result (connects and reached the
//! target, amcheck, data checksums, user assertions), measures the real RTO and RPO against
//! `[objectives]`, stores the report in the repository and removes the sandbox (see
//! docs/DRILLS.md).
//!
//! A drill that could not run at all (no binaries, no space, bad options) is an error; a drill
//! that ran and found a problem (restore refused or failed, recovery failed, a check or an
//! objective failed) is a report with `passed = false`, stored like any other.

pub mod checks;
pub mod choose;
pub mod report;
pub mod sandbox;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::pgserver::{self, PgBin, PgServerError, Server, ServerSpec};
use crate::progress::Progress;
use crate::repository::{Repository, RepositoryError};
use crate::restore::{self, ArchiveMode, RestoreError, RestorePlan, RestoreRequest, RestoreType, Target, TargetAction};
use crate::survey::{self, SurveyError, Times};
use checks::{CheckResult, Outcome};
use report::{judge_objective, DrillReport, Reached, Timings};
use sandbox::Sandbox;

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("sandbox {path}: {source}")]
    Sandbox { path: PathBuf, source: std::io::Error },
    #[error("sandbox {0} is not empty: a drill only uses a new or empty directory")]
    SandboxNotEmpty(PathBuf),
    #[error("not enough space for the drill in {path}: {needed} bytes needed (backup, WAL and 10% headroom), {free} free; use --sandbox on a larger file system")]
    NoSpace { path: PathBuf, needed: u64, free: u64 },
    #[error("cannot read the assertions folder {path}: {source}")]
    Assertions { path: PathBuf, source: std::io::Error },
    #[error("--random: the repository has no recoverable window with a known end time to pick a point from")]
    NoWindow,
    #[error("[{key}] {value:?}: {why}")]
    BadSetting {
        key: &'static str,
        value: String,
        why: String,
    },
    #[error(transparent)]
    Server(#[from] PgServerError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Survey(#[from] SurveyError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("cannot store the drill report: {0}")]
    Report(String),
}

/// The newest drill report stored in `repo`, `None` before the first drill (what `list` and
/// metrics show). A report that cannot be parsed is a [`DrillError::Report`].
pub async fn last_report(repo: &Repository) -> Result<Option<DrillReport>, DrillError> {
    let Some((id, body)) = repo.last_drill_report().await? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| DrillError::Report(format!("drill report {id} is not readable: {e}")))
}

/// What to drill.
#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    /// A backup id (default: the one restore chooses for the target).
    pub backup: Option<String>,
    pub target_time: Option<DateTime<Utc>>,
    /// A random point in the recoverable windows.
    pub random: bool,
    /// The sandbox directory (new or empty); default a new one under `[drill] sandbox_parent` or the temp dir.
    pub sandbox: Option<PathBuf>,
    pub keep: bool,
    pub pg_bin: Option<PathBuf>,
    /// The assertions folder (overrides `[drill] assertions`).
    pub assertions: Option<PathBuf>,
    /// The role the checks connect as (default: the OS user the server runs as).
    pub db_user: Option<String>,
    /// `pgvault-archive`, for the sandbox's `restore_command`.
    pub archive_command: PathBuf,
    pub parallel: usize,
}

struct Settings {
    recovery_timeout: Duration,
    rto: Option<(String, Duration)>,
    rpo: Option<(String, Duration)>,
}

fn duration_setting(key: &'static str, v: &Option<String>) -> Result<Option<(String, Duration)>, DrillError> {
    v.as_ref()
        .map(|s| {
            crate::units::parse_duration(s)
                .map(|d| (s.clone(), d))
                .map_err(|e| DrillError::BadSetting {
                    key,
                    value: s.clone(),
                    why: e.to_string(),
                })
        })
        .transpose()
}

fn settings(config: &Config) -> Result<Settings, DrillError> {
    Ok(Settings {
        recovery_timeout: duration_setting("drill.recovery_timeout", &config.drill.recovery_timeout)?
            .map_or(Duration::from_secs(3600), |d| d.1),
        rto: duration_setting("objectives.rto", &config.objectives.rto)?,
        rpo: duration_setting("objectives.rpo", &config.objectives.rpo)?,
    })
}

/// The target and its description; for `--random`, the timeline of the window chosen.
async fn choose_target(repo: &Repository, opts: &DrillOptions) -> Result<(Target, Option<u32>, String), DrillError> {
    if let Some(t) = opts.target_time {
        return Ok((Target::Time(t.fixed_offset()), None, format!("time {}", t.to_rfc3339())));
    }
    if opts.random {
        let s = survey::survey(repo, Times::AfterOldestBackup).await?;
        let roll: u64 = rand::random();
        let p = choose::random_point(&s.model.windows_by_timeline(), roll).ok_or(DrillError::NoWindow)?;
        let desc = format!("time {} (timeline {})", p.time.to_rfc3339(), p.tli);
        return Ok((Target::Time(p.time.fixed_offset()), Some(p.tli), desc));
    }
    Ok((Target::End, None, "the end of the archived WAL".to_string()))
}

/// Runs a drill. `Err` only when the drill could not run; every finding is in the report.
pub async fn run(
    config: &Config,
    repo: &Repository,
    opts: &DrillOptions,
    progress: Arc<dyn Progress>,
) -> Result<DrillReport, DrillError> {
    let st = settings(config)?;
    let started_at = Utc::now();
    let (target, tli, target_desc) = choose_target(repo, opts).await?;
    let parent = config.drill.sandbox_parent.clone().unwrap_or_else(std::env::temp_dir);
    let sb = Sandbox::create(opts.sandbox.as_deref(), &parent)?;
    let mut report = new_report(started_at, &target_desc, opts, &sb);
    let res = drill_in(config, repo, opts, &st, &sb, target, tli, &mut report, progress).await;
    if let Err(e) = res {
        match e {
            Failure::Finding(why) => report.error = Some(why),
            Failure::CannotRun(e) => {
                cleanup(&sb, opts.keep);
                return Err(e);
            }
        }
    }
    report.kept = opts.keep;
    if let Err(e) = cleanup_checked(&sb, opts.keep) {
        report.error.get_or_insert(format!("cannot remove the sandbox: {e}"));
    }
    report.compute_passed();
    store(repo, &report).await?;
    Ok(report)
}

fn new_report(started_at: DateTime<Utc>, target: &str, opts: &DrillOptions, sb: &Sandbox) -> DrillReport {
    DrillReport {
        id: started_at.format("%Y%m%d-%H%M%S").to_string(),
        started_at,
        passed: false,
        error: None,
        backup: None,
        pg_major: None,
        target: target.to_string(),
        random: opts.random,
        sandbox: sb.root.display().to_string(),
        kept: opts.keep,
        bytes_restored: 0,
        wal_segments: 0,
        timings: Timings::default(),
        rto_seconds: None,
        rpo_seconds: None,
        rpo_basis: None,
        reached: Reached::default(),
        objectives: Vec::new(),
        checks: Vec::new(),
        server_log: Vec::new(),
    }
}

fn cleanup(sb: &Sandbox, keep: bool) {
    if let Err(e) = cleanup_checked(sb, keep) {
        tracing::warn!("{e}");
    }
}

fn cleanup_checked(sb: &Sandbox, keep: bool) -> Result<(), DrillError> {
    if keep {
        return Ok(());
    }
    sb.remove()
}

async fn store(repo: &Repository, report: &DrillReport) -> Result<(), DrillError> {
    let body = serde_json::to_vec(report).map_err(|e| DrillError::Report(e.to_string()))?;
    repo.put_drill_report(&report.id, &body).await?;
    Ok(())
}

/// How a drill step ended badly: a finding (reported, exit 4) or the drill cannot run (exit 1).
enum Failure {
    Finding(String),
    CannotRun(DrillError),
}

impl From<DrillError> for Failure {
    fn from(e: DrillError) -> Self {
        Failure::CannotRun(e)
    }
}

fn finding(e: impl std::fmt::Display) -> Failure {
    Failure::Finding(e.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn drill_in(
    config: &Config,
    repo: &Repository,
    opts: &DrillOptions,
    st: &Settings,
    sb: &Sandbox,
    target: Target,
    tli: Option<u32>,
    report: &mut DrillReport,
    progress: Arc<dyn Progress>,
) -> Result<(), Failure> {
    let restore_started = Instant::now();
    let plan = plan_restore(config, repo, opts, sb, target.clone(), tli).await?;
    report.backup = Some(plan.catalog.id.clone());
    let major = plan.catalog.pg_version_num / 10000;
    report.pg_major = Some(major);
    let pg_bin = opts.pg_bin.clone().or_else(|| config.drill.pg_bin.clone());
    let bin = PgBin::find(major, pg_bin.as_deref()).map_err(DrillError::from)?;
    let wal_bytes = plan.recovery.as_ref().map_or(0, |c| c.plan.bytes());
    report.wal_segments = plan.recovery.as_ref().map_or(0, |c| c.plan.segment_count());
    let needed = sandbox::space_needed(plan.catalog.size, wal_bytes);
    let free = sandbox::free_bytes(&sb.root)?;
    if free < needed {
        return Err(DrillError::NoSpace {
            path: sb.root.clone(),
            needed,
            free,
        }
        .into());
    }
    let summary = restore::execute(config, repo, &plan, progress).await.map_err(finding)?;
    report.bytes_restored = summary.bytes;
    report.timings.restore = restore_started.elapsed().as_secs_f64();
    let mut server = start_server(config, opts, sb, bin)?;
    let replay_started = Instant::now();
    if let Err(e) = server
        .start(st.recovery_timeout)
        .and_then(|_| server.wait_promoted(st.recovery_timeout))
    {
        report.server_log = server.log_errors(20);
        let _ = server.stop();
        return Err(finding(e));
    }
    report.timings.wal_replay = replay_started.elapsed().as_secs_f64();
    let rto = restore_started.elapsed();
    report.rto_seconds = Some(rto.as_secs_f64());
    let checks_started = Instant::now();
    let checksums_on = run_online_checks(config, opts, &server, &plan, &target, report)?;
    let clean = server.stop().map_err(DrillError::from)?;
    report.checks.push(checks::checksums(&server, checksums_on, clean));
    report.timings.checks = checks_started.elapsed().as_secs_f64();
    judge_objectives(st, report, rto);
    if report.checks.iter().any(|c| c.outcome == Outcome::Fail) {
        report.server_log = server.log_errors(20);
    }
    Ok(())
}

async fn plan_restore(
    config: &Config,
    repo: &Repository,
    opts: &DrillOptions,
    sb: &Sandbox,
    target: Target,
    tli: Option<u32>,
) -> Result<RestorePlan, Failure> {
    let mut req = RestoreRequest {
        pgdata: sb.data_dir(),
        backup: opts.backup.clone(),
        target,
        action: TargetAction::Promote,
        timeline: tli.map(|t| t.to_string()),
        tablespace_map: Vec::new(),
        link_map: Vec::new(),
        archive_mode: ArchiveMode::Off,
        kind: RestoreType::Default,
        parallel: opts.parallel.max(1),
        archive_command: opts.archive_command.clone(),
    };
    if let Some(id) = &opts.backup {
        let cat = repo.load_catalog(id).await.map_err(finding)?;
        req.tablespace_map = tablespace_map(sb, &cat.tablespaces);
        return restore::plan(config, repo, &req).await.map_err(finding);
    }
    let plan = restore::plan(config, repo, &req).await.map_err(finding)?;
    if plan.catalog.tablespaces.is_empty() {
        return Ok(plan);
    }
    // Tablespaces go into the sandbox too, never to their production locations.
    req.backup = Some(plan.catalog.id.clone());
    req.tablespace_map = tablespace_map(sb, &plan.catalog.tablespaces);
    restore::plan(config, repo, &req).await.map_err(finding)
}

fn tablespace_map(sb: &Sandbox, ts: &[crate::repository::catalog::TablespaceEntry]) -> Vec<String> {
    ts.iter()
        .map(|t| format!("{}={}", t.oid, sb.tablespace_dir(t.oid).display()))
        .collect()
}

fn start_server(config: &Config, opts: &DrillOptions, sb: &Sandbox, bin: PgBin) -> Result<Server, Failure> {
    sb.write_files()?;
    let controldata = pgserver::server_command(&bin.tool("pg_controldata"));
    let mut cmd = controldata;
    cmd.arg(sb.data_dir());
    pgserver::chown_to_server_user(&sb.root).map_err(DrillError::from)?;
    let critical = pgserver::output_with_timeout(cmd, Duration::from_secs(60))
        .map(|o| sandbox::recovery_critical_from_controldata(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default();
    let port = sandbox::pick_port(config.postgres.port);
    let spec = ServerSpec {
        data_dir: sb.data_dir(),
        socket_dir: sb.socket_dir(),
        port,
        log_file: sb.log_file(),
        settings: sandbox::seal_settings(sb, port, &critical),
        user: opts.db_user.clone().unwrap_or_else(pgserver::server_os_user),
    };
    Ok(Server::new(bin, spec))
}

/// The recovery check, amcheck and the assertions; returns whether data checksums are on.
fn run_online_checks(
    config: &Config,
    opts: &DrillOptions,
    server: &Server,
    plan: &RestorePlan,
    target: &Target,
    report: &mut DrillReport,
) -> Result<bool, Failure> {
    let started = Instant::now();
    let q = server.query(
        "postgres",
        "SELECT pg_last_wal_replay_lsn(), extract(epoch FROM pg_last_xact_replay_timestamp()), (SELECT timeline_id FROM pg_control_checkpoint()), current_setting('data_checksums')",
    );
    let row = match q {
        Ok(r) => r,
        Err(e) => {
            report
                .checks
                .push(CheckResult::new("recovery", Outcome::Fail, e.to_string(), started));
            return Ok(false);
        }
    };
    let f: Vec<&str> = row.trim().split('|').collect();
    let get = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
    report.reached = Reached {
        replay_lsn: get(0).map(str::to_string),
        last_replayed_commit: get(1)
            .and_then(|s| s.parse::<f64>().ok())
            .and_then(|e| DateTime::<Utc>::from_timestamp_millis((e * 1000.0) as i64)),
        timeline: get(2).and_then(|s| s.parse().ok()),
    };
    let now = Utc::now();
    let (basis, from) = match report.reached.last_replayed_commit {
        Some(t) => ("last replayed commit", t),
        None => ("backup stop time", plan.catalog.stop_time),
    };
    report.rpo_seconds = Some((now - from).num_milliseconds().max(0) as f64 / 1000.0);
    report.rpo_basis = Some(basis.to_string());
    report
        .checks
        .push(recovery_check(plan, target, &report.reached, started));
    let dbs = config.drill.amcheck_databases.clone().unwrap_or_default();
    report.checks.push(checks::amcheck(server, &dbs));
    if let Some(dir) = opts
        .assertions
        .clone()
        .or_else(|| config.drill.assertions.as_ref().map(|p| config.relative_to_config(p)))
    {
        report.checks.extend(checks::run_assertions(server, &dir)?);
    }
    Ok(get(3) == Some("on"))
}

/// Whether recovery got where it was asked to: for the end of the archive, into the newest
/// planned segment; for a time, no replayed commit after it (PostgreSQL itself refuses to promote
/// when a time target is never reached).
fn recovery_check(plan: &RestorePlan, target: &Target, reached: &Reached, started: Instant) -> CheckResult {
    let name = "recovery";
    let lsn = reached
        .replay_lsn
        .as_deref()
        .and_then(|l| l.parse::<crate::lsn::Lsn>().ok());
    let Some(lsn) = lsn else {
        return CheckResult::new(
            name,
            Outcome::Fail,
            "the server reports no replayed WAL position",
            started,
        );
    };
    let commit = reached
        .last_replayed_commit
        .map(|t| format!(", last commit {}", t.to_rfc3339()))
        .unwrap_or_default();
    match target {
        Target::End => {
            let last = plan
                .recovery
                .as_ref()
                .and_then(|c| c.plan.segments.last().map(|s| (*s, c.plan.segment_size)));
            match last {
                Some((seg, size)) if lsn < seg.start_lsn(size) => CheckResult::new(
                    name,
                    Outcome::Fail,
                    format!("recovery stopped at {lsn}, before the newest archived segment {seg}"),
                    started,
                ),
                _ => CheckResult::new(
                    name,
                    Outcome::Pass,
                    format!("promoted at {lsn}{commit}: the end of the archived WAL"),
                    started,
                ),
            }
        }
        Target::Time(t) => match reached.last_replayed_commit {
            Some(c) if c > *t => CheckResult::new(
                name,
                Outcome::Fail,
                format!(
                    "replayed a commit at {} past the target {}",
                    c.to_rfc3339(),
                    t.to_rfc3339()
                ),
                started,
            ),
            _ => CheckResult::new(name, Outcome::Pass, format!("promoted at {lsn}{commit}"), started),
        },
        _ => CheckResult::new(name, Outcome::Pass, format!("promoted at {lsn}{commit}"), started),
    }
}

fn judge_objectives(st: &Settings, report: &mut DrillReport, rto: Duration) {
    if let Some((s, limit)) = &st.rto {
        report.objectives.push(judge_objective("rto", s, *limit, rto));
    }
    if let (Some((s, limit)), Some(rpo)) = (&st.rpo, report.rpo_seconds) {
        report
            .objectives
            .push(judge_objective("rpo", s, *limit, Duration::from_secs_f64(rpo)));
    }
}

#[cfg(test)]
mod tests;
