//! The jobs `pgvault schedule` runs: each through the library call of its manual command
//! (`backup::run`, `retention::expire`, `verify::verify`, `drill::run`) with progress off, its
//! outcome told apart as done, failed, or not run because a manual run holds the lock.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::Utc;
use pgvault_core::backup::{self, BackupOptions};
use pgvault_core::config::Config;
use pgvault_core::drill::{self, DrillOptions};
use pgvault_core::progress::Progress;
use pgvault_core::repository::lock::LockError;
use pgvault_core::repository::Repository;
use pgvault_core::retention::{self, Policy, PolicyOverrides};
use pgvault_core::schedule::JobKind;
use pgvault_core::verify::{self, VerifyOptions};

/// How a run ended.
pub enum Ran {
    Ok(String),
    /// The repository lock was held (a manual run): retried at the next slot.
    Busy(String),
    Failed(String),
}

pub async fn run_job(config: &Config, repo: &Repository, kind: JobKind) -> Ran {
    tracing::info!("job {kind}: starting");
    let result = match kind {
        JobKind::Backup | JobKind::BackupDiff | JobKind::BackupIncr => backup(config, repo, kind).await,
        JobKind::Expire => expire(config, repo).await,
        JobKind::Verify => verify(repo).await,
        JobKind::Drill => drill(config, repo).await,
    };
    match result {
        Ok(r) => r,
        Err(e) if lock_held(&e) => Ran::Busy(format!("{e:#}")),
        Err(e) => Ran::Failed(format!("{e:#}")),
    }
}

async fn backup(config: &Config, repo: &Repository, kind: JobKind) -> Result<Ran> {
    let mut opts = BackupOptions::from_config(config);
    opts.kind = kind.backup_kind().unwrap_or(opts.kind);
    let cat = backup::run(config, repo, &opts, quiet()).await?;
    // A fallback (no chain to build on) shows as the kind actually taken.
    let of = cat.parent.as_deref().map(|p| format!(" of {p}")).unwrap_or_default();
    Ok(Ran::Ok(format!(
        "{} backup {}{of} stored {} bytes ({} bytes of data)",
        cat.kind, cat.id, cat.stored_size, cat.size
    )))
}

async fn expire(config: &Config, repo: &Repository) -> Result<Ran> {
    let policy = Policy::resolve(config.retention.as_ref(), &PolicyOverrides::default()).context("retention policy")?;
    let out = retention::expire(repo, &policy, Utc::now(), false).await?;
    Ok(Ran::Ok(format!(
        "deleted {} backup(s) and {} WAL object(s)",
        out.plan.delete_backups.len(),
        out.plan.delete_wal.len()
    )))
}

async fn verify(repo: &Repository) -> Result<Ran> {
    let opts = VerifyOptions {
        backup: None,
        parallel: 4,
    };
    let report = verify::verify(repo, &opts).await?;
    if let Err(e) = verify::record::store(repo, &report, Utc::now()).await {
        tracing::warn!("job verify: cannot store the verify record: {e}");
    }
    if report.whole {
        Ok(Ran::Ok(format!(
            "repository whole ({} backup(s))",
            report.backups.len()
        )))
    } else {
        Ok(Ran::Failed(format!(
            "{} problem(s) found: run `pgvault verify`",
            report.findings.len()
        )))
    }
}

async fn drill(config: &Config, repo: &Repository) -> Result<Ran> {
    let opts = DrillOptions {
        archive_command: crate::drill_cmd::archive_command_path(config)?,
        parallel: config.restore.parallel,
        ..DrillOptions::default()
    };
    let report = drill::run(config, repo, &opts, quiet()).await?;
    let rto = report.rto_seconds.map_or("-".into(), |s| format!("{s:.1}s"));
    if report.passed {
        Ok(Ran::Ok(format!("drill {} passed, RTO {rto}", report.id)))
    } else {
        Ok(Ran::Failed(format!(
            "drill {} failed: {}",
            report.id,
            report.failures().join("; ")
        )))
    }
}

fn quiet() -> Arc<dyn Progress> {
    crate::progress::for_terminal(false)
}

/// Whether an error is "the repository lock is held" (a manual run is working). The commands'
/// errors wrap the lock error transparently (their `source()` skips it), so each is unwrapped.
fn lock_held(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let lock = c
            .downcast_ref::<LockError>()
            .or_else(|| match c.downcast_ref::<backup::BackupError>() {
                Some(backup::BackupError::Lock(l)) => Some(l),
                _ => None,
            })
            .or_else(|| match c.downcast_ref::<retention::RetentionError>() {
                Some(retention::RetentionError::Lock(l)) => Some(l),
                _ => None,
            });
        matches!(lock, Some(LockError::Held { .. }))
    })
}

pub fn log_run(kind: JobKind, ran: &Ran, took: Duration, skipped: u32) {
    let secs = took.as_secs_f64();
    if skipped > 0 {
        tracing::warn!("job {kind}: {skipped} of its slot(s) passed while it ran and were skipped");
    }
    match ran {
        Ran::Ok(what) => tracing::info!(
            job = kind.name(),
            outcome = "ok",
            duration_s = secs,
            "job {kind} ok in {secs:.1}s: {what}"
        ),
        Ran::Busy(why) => tracing::warn!(
            job = kind.name(),
            outcome = "busy",
            duration_s = secs,
            "job {kind} not run: the repository lock is held, retrying at the next slot: {why}"
        ),
        Ran::Failed(why) => tracing::error!(
            job = kind.name(),
            outcome = "failed",
            duration_s = secs,
            "job {kind} FAILED after {secs:.1}s: {why}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgvault_core::repository::lock::LockHolder;

    fn held() -> LockError {
        LockError::Held {
            location: "file:///r".into(),
            name: "backup".into(),
            key: "locks/backup".into(),
            holder: Box::new(LockHolder {
                host: "db1".into(),
                pid: 42,
                command: "pgvault backup".into(),
                started: Utc::now(),
            }),
            expires_at: Utc::now(),
        }
    }

    #[test]
    fn a_held_lock_is_told_apart_from_other_failures() {
        let direct = anyhow::Error::from(held());
        assert!(lock_held(&direct));
        let wrapped = anyhow::Error::from(backup::BackupError::from(held())).context("job backup");
        assert!(lock_held(&wrapped), "found through the error chain");
        let expire = anyhow::Error::from(retention::RetentionError::from(held()));
        assert!(lock_held(&expire));
        let other = anyhow::Error::from(LockError::BadName("x".into()));
        assert!(!lock_held(&other));
        assert!(!lock_held(&anyhow::anyhow!("connection refused")));
    }
}
