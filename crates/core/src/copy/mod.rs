//! `pgvault copy`: keeps a second repository (another disk, another bucket, another cloud) in
//! step with the first, for disaster recovery.
//!
//! A repository is only as safe as the one store it lives in; a copy in a second store survives
//! the loss of the first (a deleted bucket, a compromised account, a dead disk). This module
//! replicates every complete backup and every WAL object from a *source* repository to a
//! *target* repository, so that `pgvault restore` can read either.
//!
//! Design:
//! - **Same key, sealed bytes.** On the first copy the target's descriptor `pgvault.repo` is
//!   copied byte for byte from the source, so both repositories hold the same wrapped repository
//!   key (and the same repository id): the same passphrase opens both, and objects are copied as
//!   the sealed bytes they are, without being decrypted and re-encrypted. (The one field that
//!   describes the store rather than the repository, `conditional_create`, is probed on the
//!   target as `init` does, and rewritten when the target store differs.) A target that already holds another repository
//!   (another cluster, or another `init` of this cluster, hence another key) is refused.
//! - **Verified while streaming.** Every object is opened with the repository key and
//!   authenticated chunk by chunk as its bytes flow from the source to the target: bundles are
//!   checked piece by piece against the SHA-256s of their catalog, the manifest against the
//!   catalog's `manifest_sha256`, WAL segments by the wal module's one segment check (cluster,
//!   position, timeline, size). An object that fails is never completed in the target.
//! - **The archive model decides.** Which WAL a backup needs before its catalog may be stored
//!   comes from [`crate::timeline::ArchiveModel::consistency_segments`] (read once per run by
//!   [`crate::survey`]), so a backup during which the timeline switched waits for the segments
//!   recovery really reads.
//! - **Resumable, never half-visible.** Objects are written atomically by [`Storage`](crate::storage::Storage); a backup's
//!   `catalog` (whose presence *is* the backup, docs/FORMAT.md) is copied last, only once its
//!   bundles, its manifest and the WAL that makes it consistent are in the target. Running copy
//!   again copies only what the target lacks (objects already there with the right size are
//!   kept), so an interrupted copy resumes where it stopped.
//! - **The same holes.** The source's declared WAL gaps (markers of WAL the asynchronous archiver
//!   dropped, [`crate::repository::gaps`]) are copied too, before the WAL, so that `list`,
//!   `verify` and `restore` on the copy name the same holes, for the same reason, as the source.
//! - **Bounded memory.** Objects are streamed (`get_stream` → `upload`); only WAL objects of at
//!   most [`BUFFERED_OBJECT_LIMIT`] are held whole, to store them create-if-absent like `push`.
//!
//! Layout: this file orchestrates (plan, then copy); [`plan`] is what the target lacks, a pure
//! function of the two listings; [`object`] copies and verifies one object; [`target`]
//! recognises the target and creates its descriptor.

mod object;
mod plan;
mod target;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::format::FormatError;
use crate::progress::{format_bytes, Progress};
use crate::repository::{layout, BackupCatalog, Repository, RepositoryError};
use crate::retention;
use crate::storage::StorageError;
use crate::survey::{self, SurveyError, Times};
use crate::wal::WalFileName;

use object::{copy_catalog, copy_gaps, run_jobs, Ctx};
use plan::{missing_wal, needed_wal, plan_backup, plan_gaps, plan_wal, Job, WalPlan};
use target::{inspect_target, prepare_target, TargetState};

/// WAL objects up to this size are read whole and stored create-if-absent (as `push` does);
/// larger objects are streamed.
pub const BUFFERED_OBJECT_LIMIT: u64 = 64 * 1024 * 1024;
/// Failures quoted in full in [`CopyError::Incomplete`].
const QUOTED_FAILURES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("target: {0}")]
    Lock(#[from] crate::repository::lock::LockError),
    #[error("the target configuration's [retention]: {0}")]
    TargetRetention(String),
    #[error("target configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("source and target are the same repository ({0}): point --to at the configuration of another repository")]
    SameRepository(String),
    #[error("target {target} holds the repository of the cluster with system identifier {target_cluster}, but the source {source_location} belongs to cluster {source_cluster}: nothing was copied; point the target configuration's [repository] url at an empty location or at an earlier copy of this repository")]
    ForeignCluster {
        target: String,
        target_cluster: u64,
        source_location: String,
        source_cluster: u64,
    },
    #[error("target {target} holds another repository of this cluster (repository id {target_id}, the source's is {source_id}), sealed with another key: nothing was copied; use an empty location, or one filled by `pgvault copy` from this repository")]
    DifferentRepository {
        target: String,
        target_id: String,
        source_id: String,
    },
    #[error("target {target}: its descriptor {key} is unreadable ({message}); nothing was copied: check that the target location really is a pgvault repository")]
    BadTargetMeta {
        target: String,
        key: &'static str,
        message: String,
    },
    #[error("target {target}: the repository key opened by the target's passphrase (key id {target_key}) is not the source's ({source_key}); nothing was copied")]
    DifferentKey {
        target: String,
        target_key: String,
        source_key: String,
    },
    #[error("the source repository is not encrypted and the target {target} is not on this machine's disk: the copy would store backups in the clear; set [encryption] cipher = \"none\" in the target configuration to do that on purpose")]
    RemoteUnencrypted { target: String },
    #[error("{location}: {source}; this object of the source repository is corrupted (damaged or replaced) and was not copied (its backup stays out of the target): restore from another copy, or take a new backup")]
    Object { location: String, source: FormatError },
    #[error("{location}: checksum mismatch for {path} at bundle offset {offset} (expected {expected}, got {found}); the source backup is corrupted and was not copied")]
    Checksum {
        location: String,
        path: String,
        offset: u64,
        expected: String,
        found: String,
    },
    #[error("{location}: {message}; the object was not copied")]
    Invalid { location: String, message: String },
    #[error("backup {id} was not copied: {reason}")]
    BackupSkipped { id: String, reason: String },
    #[error("copy to {target} is incomplete: {} object(s) could not be copied; the target holds only complete backups. {summary} Failures:\n{}\nFix the cause and run `pgvault copy` again: it copies only what is still missing", failures.len(), quote_failures(failures))]
    Incomplete {
        target: String,
        summary: String,
        failures: Vec<String>,
    },
    #[error("reading the source repository's archive: {0}")]
    Survey(#[from] SurveyError),
    #[error("internal error: {0}")]
    Internal(String),
}

fn quote_failures(failures: &[String]) -> String {
    let mut s: Vec<String> = failures
        .iter()
        .take(QUOTED_FAILURES)
        .map(|f| format!("  - {f}"))
        .collect();
    if failures.len() > QUOTED_FAILURES {
        s.push(format!("  - … and {} more", failures.len() - QUOTED_FAILURES));
    }
    s.join("\n")
}

/// How to copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Only work out what would be copied; write nothing.
    pub dry_run: bool,
    /// Objects copied at once.
    pub parallel: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            dry_run: false,
            parallel: 4,
        }
    }
}

/// One thing the target lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanItem {
    /// A backup: `objects` of its objects (bundles, manifest, catalog) and `bytes` to copy.
    Backup {
        id: String,
        objects: usize,
        bytes: u64,
        objects_present: usize,
    },
    Wal {
        name: String,
        bytes: u64,
    },
}

/// What a copy did (or, for a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct CopySummary {
    pub source: String,
    pub target: String,
    pub dry_run: bool,
    /// The target's descriptor was created by this run.
    pub descriptor_created: bool,
    pub backups_copied: usize,
    pub backups_present: usize,
    pub wal_copied: usize,
    pub wal_present: usize,
    /// Declared WAL gaps (`gaps/<tli>/<first>-<last>`) stored in the target, or already there.
    pub gaps_copied: usize,
    pub gaps_present: usize,
    /// The gaps the target lacked when the run started: `first..last`, and why they are holes.
    pub gap_plan: Vec<String>,
    /// Objects (bundles, manifests, catalogs, WAL) and sealed bytes written to the target.
    pub objects_copied: usize,
    pub bytes_copied: u64,
    /// Bundles and manifests of incomplete backups already in the target (from an interrupted run).
    pub objects_reused: usize,
    /// What the target lacked when the run started.
    pub plan: Vec<PlanItem>,
    /// Backups and WAL objects not copied because the target's `[retention]` would expire them.
    pub backups_expired_by_target: usize,
    pub wal_expired_by_target: usize,
}

impl CopySummary {
    /// One line for people: counts, bytes, and what was already there.
    pub fn one_line(&self) -> String {
        let verb = if self.dry_run { "would copy" } else { "copied" };
        format!(
            "{verb} {} backup(s), {} WAL file(s), {} to {}; already there: {} backup(s), {} WAL file(s){}",
            self.backups_copied,
            self.wal_copied,
            format_bytes(self.bytes_copied),
            self.target,
            self.backups_present,
            self.wal_present,
            if self.objects_reused > 0 {
                format!(", {} object(s) of unfinished backups", self.objects_reused)
            } else {
                String::new()
            }
        ) + &if self.gaps_copied + self.gaps_present > 0 {
            format!(
                "; WAL gap markers: {} {}, {} already there",
                self.gaps_copied,
                if self.dry_run { "to copy" } else { "copied" },
                self.gaps_present
            )
        } else {
            String::new()
        } + &if self.backups_expired_by_target + self.wal_expired_by_target > 0 {
            format!(
                "; left out under the target's [retention]: {} backup(s), {} WAL file(s)",
                self.backups_expired_by_target, self.wal_expired_by_target
            )
        } else {
            String::new()
        }
    }
}

/// A backup the target lacks, with what it needs.
struct BackupWork {
    cat: BackupCatalog,
    jobs: Vec<Job>,
    reused: usize,
    /// The WAL it needs to become consistent (the archive model's answer).
    needed_wal: Vec<WalFileName>,
}

/// Copies everything the target lacks. `target_config` is the target's configuration file
/// (its `[repository]` and `[encryption]`).
pub async fn run(
    source: &Repository,
    target_config: &Config,
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopySummary, CopyError> {
    let parallel = opts.parallel.clamp(1, 64);
    let target = inspect_target(source, target_config, opts.dry_run).await?;
    let mut summary = CopySummary {
        source: source.storage().to_string(),
        target: target.name.clone(),
        dry_run: opts.dry_run,
        ..CopySummary::default()
    };
    let (wal, backups) = plan_run(source, target_config, &target, &mut summary).await?;
    if opts.dry_run {
        summary.wal_copied = wal.jobs.len();
        summary.gaps_copied = wal.gaps.len();
        summary.backups_copied = backups.len();
        summary.objects_reused = backups.iter().map(|b| b.reused).sum();
        summary.objects_copied =
            wal.jobs.len() + wal.gaps.len() + backups.iter().map(|b| b.jobs.len() + 1).sum::<usize>();
        summary.bytes_copied = plan_bytes(&summary.plan);
        return Ok(summary);
    }
    let target_repo = prepare_target(source, target_config, &target, &mut summary).await?;
    // The target's repository lock: no expire, delete or other copy changes it meanwhile.
    let lock = target_repo
        .lock(retention::REPOSITORY_LOCK, retention::LOCK_LEASE, "pgvault copy")
        .await?;
    let result = copy_locked(source, &target_repo, target, wal, backups, parallel, summary, progress).await;
    if let Err(e) = lock.release().await {
        tracing::warn!("releasing the target's repository lock: {e}");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn copy_locked(
    source: &Repository,
    target_repo: &Repository,
    target: TargetState,
    wal: WalPlan,
    backups: Vec<BackupWork>,
    parallel: usize,
    mut summary: CopySummary,
    progress: Arc<dyn Progress>,
) -> Result<CopySummary, CopyError> {
    progress.total(plan_bytes(&summary.plan));
    // Objects are verified under the source's identity; the target has the same repository id
    // and keys, so identity-bound objects stay valid there byte for byte. The target
    // repository's store carries the create mode its descriptor records.
    let ctx = Ctx {
        source: source.storage().clone(),
        target: target_repo.storage().clone(),
        sealing: source.sealing(),
        progress: progress.clone(),
    };
    let mut present = target.present;
    // The markers first: from the moment the target can miss that WAL, it says why.
    let (gaps_stored, mut failures) = copy_gaps(target_repo, &wal.gaps).await;
    summary.gaps_copied = gaps_stored;
    summary.objects_copied += gaps_stored;
    progress.phase("copying WAL");
    for (job, r) in run_jobs(&ctx, wal.jobs, parallel).await {
        match r {
            Ok(n) => {
                summary.wal_copied += 1;
                summary.objects_copied += 1;
                summary.bytes_copied += n;
                present.insert(job.key, n);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    progress.phase("copying backups");
    for work in backups {
        copy_backup(source, &ctx, work, parallel, &mut present, &mut summary, &mut failures).await;
    }
    progress.finish();
    if !failures.is_empty() {
        return Err(CopyError::Incomplete {
            target: target.name,
            summary: summary.one_line() + ".",
            failures,
        });
    }
    Ok(summary)
}

/// What the target lacks: WAL first (backups need theirs before their catalog), then backups
/// oldest first. The archive model is read once, for the WAL listing, the catalogs and which
/// segments each backup needs (following a timeline switch during the backup).
async fn plan_run(
    source: &Repository,
    target_config: &Config,
    target: &TargetState,
    summary: &mut CopySummary,
) -> Result<(WalPlan, Vec<BackupWork>), CopyError> {
    let mut survey = survey::survey(source, Times::None).await?;
    for (id, why) in &survey.unreadable {
        tracing::warn!(backup = %id, "not copied: its catalog cannot be read: {why}");
    }
    let (skip_backups, skip_wal) = expired_by_target(source, target_config, &survey).await?;
    summary.backups_expired_by_target = survey.backups.iter().filter(|b| skip_backups.contains(&b.id)).count();
    summary.wal_expired_by_target = skip_wal.len();
    survey.backups.retain(|b| !skip_backups.contains(&b.id));
    survey.wal.retain(|(n, _)| !skip_wal.contains(n));
    // Chains parent first: a parent is older than its child, so copying oldest first (the
    // survey's order, made explicit here) never stores a child's catalog before its parent's.
    survey.backups.sort_by(|a, b| a.id.cmp(&b.id));
    let mut wal = plan_wal(&survey.wal, &target.present, source.cluster());
    (wal.gaps, wal.gaps_present) = plan_gaps(&source.wal_gaps().await?, &target.present);
    summary.gaps_present = wal.gaps_present;
    summary.gap_plan = wal
        .gaps
        .iter()
        .map(|m| format!("{}..{} ({})", m.first, m.last, m.describe()))
        .collect();
    summary.wal_present = wal.present;
    summary.plan.append(&mut wal.items);
    let mut backups = Vec::new();
    for listed in &survey.backups {
        if target.present.contains_key(&layout::catalog_key(&listed.id)) {
            summary.backups_present += 1;
            continue;
        }
        let cat = &source.load_catalog(&listed.id).await?;
        let stored: HashMap<String, u64> = source
            .storage()
            .list(&layout::backup_dir(&cat.id))
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let p = plan_backup(cat, &stored, &target.present);
        summary.plan.push(p.item);
        backups.push(BackupWork {
            cat: cat.clone(),
            jobs: p.jobs,
            reused: p.reused,
            needed_wal: needed_wal(&survey.model, &listed.point()),
        });
    }
    Ok((wal, backups))
}

/// What the target's own `[retention]` would expire from the source's backups and WAL (with the
/// source's pins): copy leaves those out, so it never brings back what the target expired.
/// Nothing is left out when the target has no policy.
async fn expired_by_target(
    source: &Repository,
    target_config: &Config,
    survey: &survey::Survey,
) -> Result<(HashSet<String>, HashSet<WalFileName>), CopyError> {
    let policy = retention::Policy::resolve(target_config.retention.as_ref(), &retention::PolicyOverrides::default())
        .map_err(|e| CopyError::TargetRetention(e.to_string()))?;
    if policy.is_empty() {
        return Ok(Default::default());
    }
    let pins = source.pins().await?;
    let wal: Vec<(WalFileName, u64)> = survey.wal.iter().map(|(n, o)| (*n, o.size)).collect();
    let input = retention::PlanInput {
        backups: &survey.backups,
        unreadable: &survey.unreadable,
        pins: &pins,
        model: &survey.model,
        wal: &wal,
        orphans: &[],
        now: chrono::Utc::now(),
    };
    let plan = retention::plan_expire(&input, &policy).map_err(|e| CopyError::TargetRetention(e.to_string()))?;
    Ok((
        plan.delete_backups.into_iter().map(|b| b.id).collect(),
        plan.delete_wal.into_iter().collect(),
    ))
}

fn plan_bytes(plan: &[PlanItem]) -> u64 {
    plan.iter()
        .map(|p| match p {
            PlanItem::Backup { bytes, .. } | PlanItem::Wal { bytes, .. } => *bytes,
        })
        .sum()
}

/// Copies one backup's bundles and manifest, then, once they and the WAL it needs are in the
/// target, its catalog (whose presence is the backup). Failures are collected, not returned:
/// one backup's failure does not stop the others.
async fn copy_backup(
    source: &Repository,
    ctx: &Ctx,
    work: BackupWork,
    parallel: usize,
    present: &mut HashMap<String, u64>,
    summary: &mut CopySummary,
    failures: &mut Vec<String>,
) {
    let BackupWork {
        cat,
        jobs,
        reused,
        needed_wal,
    } = work;
    summary.objects_reused += reused;
    let mut ok = true;
    for (job, r) in run_jobs(ctx, jobs, parallel).await {
        match r {
            Ok(n) => {
                summary.objects_copied += 1;
                summary.bytes_copied += n;
                present.insert(job.key, n);
            }
            Err(e) => {
                ok = false;
                failures.push(e.to_string());
            }
        }
    }
    let skipped = |reason: String| {
        CopyError::BackupSkipped {
            id: cat.id.clone(),
            reason,
        }
        .to_string()
    };
    if !ok {
        failures.push(skipped("some of its objects failed (above)".into()));
        return;
    }
    // Completeness rule: the WAL that makes the backup consistent must be there first.
    let missing = missing_wal(&needed_wal, present);
    if !missing.is_empty() {
        failures.push(skipped(format!(
            "the WAL it needs is not in the target: {}",
            missing.join(", ")
        )));
        return;
    }
    // The catalog last: opened and checked (it is the source's own), then stored as is.
    match copy_catalog(source, &ctx.target, &cat).await {
        Ok(n) => {
            summary.backups_copied += 1;
            summary.objects_copied += 1;
            summary.bytes_copied += n;
            ctx.progress.advance(n);
        }
        Err(e) => failures.push(e.to_string()),
    }
}
