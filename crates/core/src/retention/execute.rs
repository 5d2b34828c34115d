//! Carrying out a plan, in an order that is safe to kill at any instant and to run again.
//!
//! 1. Take [`REPOSITORY_LOCK`]: no backup, copy, pin or other expire runs meanwhile.
//! 2. Gather and plan again under the lock (what is deleted is judged on the repository as it
//!    is now, not as a dry run saw it).
//! 3. Record the WAL horizon before any WAL goes, so that `verify`/`list` know a missing
//!    stretch before it was removed on purpose.
//! 4. Delete each expired backup catalog first ([`Repository::delete_backup`]): once the catalog
//!    is gone the backup no longer exists for anyone; its remaining objects are an orphan a
//!    re-run removes (they are old, so past the safety age).
//! 5. Delete the planned WAL objects, by exact name (a segment pushed meanwhile is never in
//!    the plan; a push never deletes, so archive push needs no lock).
//! 6. Remove orphaned backup directories older than the safety age.
//!
//! A kill between any two steps leaves backups that are either whole (catalog present, every
//! object and their WAL kept) or gone (catalog absent); the next run plans the same deletions
//! from what is left. Test failpoints (`PGVAULT_FAILPOINT`, see [`crate::failpoint`]):
//! `expire:after-lock`, `expire:after-horizon`, `expire:after-backup=N`, `expire:after-wal=N`,
//! `expire:after-orphan=N`.

use chrono::{DateTime, Utc};

use crate::failpoint;
use crate::repository::lock::{LockError, LockGuard};
use crate::repository::state::Pin;
use crate::repository::{Repository, RepositoryError};
use crate::retention::plan::{plan_delete, plan_expire, ExpirePlan, OrphanDir, PlanError, PlanInput};
use crate::retention::policy::Policy;
use crate::retention::{LOCK_LEASE, REPOSITORY_LOCK};
use crate::survey::{self, Survey, SurveyError, Times};

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Survey(#[from] SurveyError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("backup {0} does not exist")]
    NoSuchBackup(String),
}

/// What the planner needs, read from a repository.
pub struct Gathered {
    pub survey: Survey,
    pub pins: Vec<Pin>,
    pub orphans: Vec<OrphanDir>,
    /// Stored sizes of the WAL objects, as the planner takes them.
    pub wal: Vec<(crate::wal::WalFileName, u64)>,
}

impl Gathered {
    pub fn input(&self, now: DateTime<Utc>) -> PlanInput<'_> {
        PlanInput {
            backups: &self.survey.backups,
            pins: &self.pins,
            model: &self.survey.model,
            wal: &self.wal,
            orphans: &self.orphans,
            now,
        }
    }
}

/// Reads backups (summaries), the WAL listing, pins and the backup directories without a
/// catalog. Backups whose catalog is unreadable are neither planned nor orphans: they are left
/// alone and reported by the survey.
pub async fn gather(repo: &Repository) -> Result<Gathered, RetentionError> {
    let survey = survey::survey(repo, Times::None).await?;
    let pins = repo.pins().await?;
    let mut orphans = Vec::new();
    for id in repo.backup_dir_ids().await? {
        let known = survey.backups.iter().any(|b| b.id == id) || survey.unreadable.iter().any(|(u, _)| *u == id);
        if known {
            continue;
        }
        let objects = repo.backup_objects(&id).await?;
        orphans.push(OrphanDir {
            id,
            objects: objects.len(),
            bytes: objects.iter().map(|o| o.size).sum(),
            newest: objects
                .iter()
                .map(|o| o.last_modified)
                .max()
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        });
    }
    let wal = survey.wal.iter().map(|(n, o)| (*n, o.size)).collect();
    Ok(Gathered {
        survey,
        pins,
        orphans,
        wal,
    })
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: ExpirePlan,
    /// False for a dry run.
    pub applied: bool,
}

async fn take_lock(repo: &Repository, command: &str) -> Result<LockGuard, RetentionError> {
    Ok(repo.lock(REPOSITORY_LOCK, LOCK_LEASE, command).await?)
}

async fn release(lock: LockGuard) {
    if let Err(e) = lock.release().await {
        tracing::warn!("releasing the repository lock: {e}");
    }
}

/// `pgvault expire`: plans under `policy` at `now`; unless `dry_run`, carries the plan out
/// under the repository lock (planning again under it).
pub async fn expire(
    repo: &Repository,
    policy: &Policy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Outcome, RetentionError> {
    if dry_run {
        let g = gather(repo).await?;
        let plan = plan_expire(&g.input(now), policy)?;
        return Ok(Outcome { plan, applied: false });
    }
    let lock = take_lock(repo, "pgvault expire").await?;
    failpoint::hit("expire:after-lock");
    let result = async {
        let g = gather(repo).await?;
        let plan = plan_expire(&g.input(now), policy)?;
        apply(repo, &plan, &lock).await?;
        Ok(Outcome { plan, applied: true })
    }
    .await;
    release(lock).await;
    result
}

/// `pgvault delete ID`: the same planner, one backup.
pub async fn delete(repo: &Repository, id: &str, now: DateTime<Utc>, dry_run: bool) -> Result<Outcome, RetentionError> {
    if dry_run {
        let g = gather(repo).await?;
        let plan = plan_delete(&g.input(now), id)?;
        return Ok(Outcome { plan, applied: false });
    }
    let lock = take_lock(repo, "pgvault delete").await?;
    let result = async {
        let g = gather(repo).await?;
        let mut plan = plan_delete(&g.input(now), id)?;
        plan.orphans.clear();
        apply(repo, &plan, &lock).await?;
        Ok(Outcome { plan, applied: true })
    }
    .await;
    release(lock).await;
    result
}

/// Steps 3 to 6 of the module documentation.
async fn apply(repo: &Repository, plan: &ExpirePlan, lock: &LockGuard) -> Result<(), RetentionError> {
    if plan.is_noop() {
        return Ok(());
    }
    lock.check()?;
    if let Some(h) = &plan.horizon {
        repo.set_wal_horizon(h).await?;
    }
    failpoint::hit("expire:after-horizon");
    for (i, b) in plan.delete_backups.iter().enumerate() {
        lock.check()?;
        repo.delete_backup(&b.id).await?;
        tracing::info!(backup = %b.id, "deleted backup ({})", b.why);
        failpoint::hit_nth("expire:after-backup", i + 1);
    }
    for (i, name) in plan.delete_wal.iter().enumerate() {
        if i % 64 == 0 {
            lock.check()?;
        }
        repo.delete_wal(name).await?;
        failpoint::hit_nth("expire:after-wal", i + 1);
    }
    let mut removed = 0;
    for o in plan.orphans.iter().filter(|o| o.remove) {
        lock.check()?;
        // A catalog that appeared since planning makes it a backup, not an orphan.
        if repo.catalog_exists(&o.dir.id).await? {
            continue;
        }
        repo.delete_backup(&o.dir.id).await?;
        removed += 1;
        tracing::info!(backup = %o.dir.id, "removed orphaned backup directory");
        failpoint::hit_nth("expire:after-orphan", removed);
    }
    Ok(())
}

/// `pgvault pin ID`: stores the pin under the repository lock.
pub async fn pin(repo: &Repository, pin: &Pin) -> Result<(), RetentionError> {
    let lock = take_lock(repo, "pgvault pin").await?;
    let result = async {
        if !repo.catalog_exists(&pin.backup).await? {
            return Err(RetentionError::NoSuchBackup(pin.backup.clone()));
        }
        repo.put_pin(pin).await?;
        Ok(())
    }
    .await;
    release(lock).await;
    result
}

/// `pgvault unpin ID`: removes the pin (returns whether there was one).
pub async fn unpin(repo: &Repository, id: &str) -> Result<bool, RetentionError> {
    let lock = take_lock(repo, "pgvault unpin").await?;
    let result = async {
        let had = repo.pins().await?.iter().any(|p| p.backup == id);
        repo.delete_pin(id).await?;
        Ok(had)
    }
    .await;
    release(lock).await;
    result
}
