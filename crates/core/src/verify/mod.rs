//! `pgvault verify` and `pgvault check`: proving the repository whole, and the archive path alive.
//!
//! A backup nobody has read back is a hope, not a backup: objects rot, a lifecycle rule deletes a
//! segment, a passphrase file is replaced. `verify` reads every object back the way restore
//! would ([`objects`]: bundles through the one bundle verifier, the stored `backup_manifest`;
//! [`wal`]: every archived WAL file) and checks the archive's continuity with the archive model
//! ([`continuity`]), so that "verify passed" means "every backup restores, and every point in the
//! windows it reports can be reached". What is wrong is reported as typed [`Finding`]s; a failure
//! of verify itself (the store unreachable, the wrong passphrase) is a [`VerifyError`] instead.
//!
//! `check` ([`check`](mod@check)) forces a WAL switch on the server and waits until that segment is
//! in the repository: the archive path, end to end.

mod chain;
pub mod check;
mod continuity;
pub mod objects;
#[cfg(test)]
mod objects_tests;
pub mod record;
pub mod report;
#[cfg(test)]
mod tests;
pub mod wal;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::repository::{Repository, RepositoryError};
use crate::survey::{self, Survey, SurveyError, Times};
use crate::wal::WalFileName;

pub use check::{check, CheckError, CheckOptions, CheckReport};
pub use continuity::{assess, Continuity, Horizon};
pub use report::{
    BackupVerdict, Counts, Finding, GapReport, HorizonReport, Restorable, TimelineReport, VerifyReport, WindowReport,
};

/// Why verify could not run (as opposed to what it found).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Survey(#[from] SurveyError),
    /// The store failed while an object was being read.
    #[error("reading {what}: {detail}")]
    Read { what: String, detail: String },
    #[error("{location}: no backup '{id}' (see `pgvault list`)")]
    NoSuchBackup { location: String, id: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What to verify.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Only this backup (its objects, the WAL that makes it consistent, and the WAL after it);
    /// `None`: the whole repository.
    pub backup: Option<String>,
    /// Objects read at once.
    pub parallel: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            backup: None,
            parallel: 4,
        }
    }
}

/// Counters shared by the parallel readers.
#[derive(Debug, Default)]
pub struct Tally {
    backups: AtomicU64,
    bundles: AtomicU64,
    manifests: AtomicU64,
    wal_files: AtomicU64,
    stored_bytes: AtomicU64,
    plain_bytes: AtomicU64,
}

impl Tally {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_backup(&self) {
        Self::add(&self.backups, 1);
    }
    pub(crate) fn add_bundle(&self, stored: u64) {
        Self::add(&self.bundles, 1);
        Self::add(&self.stored_bytes, stored);
    }
    pub(crate) fn add_plain(&self, n: u64) {
        Self::add(&self.plain_bytes, n);
    }
    pub(crate) fn add_manifest(&self, n: u64) {
        Self::add(&self.manifests, 1);
        Self::add(&self.plain_bytes, n);
    }
    pub(crate) fn add_wal(&self, stored: u64, plain: u64) {
        Self::add(&self.wal_files, 1);
        Self::add(&self.stored_bytes, stored);
        Self::add(&self.plain_bytes, plain);
    }
    fn counts(&self) -> Counts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            backups: g(&self.backups),
            bundles: g(&self.bundles),
            manifests: g(&self.manifests),
            wal_files: g(&self.wal_files),
            stored_bytes: g(&self.stored_bytes),
            plain_bytes: g(&self.plain_bytes),
        }
    }
}

/// Reads every object of the repository (or of one backup) back and checks WAL continuity.
/// Read-only: takes no lock, so it runs beside archiving, backups and `expire` (an object an
/// `expire` removes while verify runs is skipped, not reported).
pub async fn verify(repo: &Repository, opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let parallel = opts.parallel.clamp(1, 64);
    let survey = survey::survey(repo, Times::AfterOldestBackup).await?;
    let horizon = repo.wal_horizon().await?.map(|h| Horizon {
        timeline: h.timeline,
        lsn: h.lsn,
    });
    let scope = opts.backup.as_deref();
    let mut findings = Vec::new();
    let tally = Tally::default();

    for (id, why) in &survey.unreadable {
        if scope.is_none_or(|s| s == id) {
            findings.push(Finding::CatalogUnreadable {
                backup: id.clone(),
                detail: why.clone(),
            });
        }
    }
    let ids: Vec<String> = match scope {
        None => survey.backups.iter().map(|b| b.id.clone()).collect(),
        Some(id) if survey.backup(id).is_some() => vec![id.to_string()],
        Some(id) if survey.unreadable.iter().any(|(u, _)| u == id) => Vec::new(),
        Some(id) => {
            return Err(VerifyError::NoSuchBackup {
                location: repo.storage().to_string(),
                id: id.to_string(),
            })
        }
    };
    // Every link of a chain is checked, even when one backup is asked for.
    let mut linked = ids.clone();
    for id in &ids {
        linked.extend(chain::ancestors(&survey.backups, id).0);
    }
    linked.sort();
    linked.dedup();
    for id in &linked {
        findings.extend(objects::verify_backup(repo, id, parallel, &tally).await?);
    }
    let mut chain_findings = chain::chain_findings(&survey.backups, &ids, &findings);
    findings.append(&mut chain_findings);

    let wal_to_read = wal_to_read(&survey, scope, repo.cluster().wal_segment_size);
    findings.extend(wal::verify_wal(repo, wal_to_read, parallel, &tally).await?);

    let archived: Vec<WalFileName> = survey.wal.iter().map(|(n, _)| *n).collect();
    let mut cont = continuity::assess(&survey.model, &archived, horizon, scope);
    findings.append(&mut cont.findings);

    let backups = verdicts(&ids, &survey, scope, &findings, &cont);
    Ok(VerifyReport {
        repository: repo.storage().to_string(),
        scope: opts.backup.clone(),
        whole: findings.is_empty(),
        findings,
        backups,
        timelines: cont.timelines,
        horizon: cont.horizon,
        counts: tally.counts(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The WAL files to read: all, or for one backup those from its start on (and every
/// `.history` and `.backup` file).
fn wal_to_read(survey: &Survey, scope: Option<&str>, ss: u64) -> Vec<(WalFileName, u64)> {
    let from = match scope {
        None => 0,
        Some(id) => survey.backup(id).map_or(u64::MAX, |b| b.start_lsn.segment(ss)),
    };
    survey
        .wal
        .iter()
        .filter(|(n, _)| !n.has_page_header() || n.segment_number(ss) >= from)
        .map(|(n, o)| (*n, o.size))
        .collect()
}

/// One verdict per backup in scope (readable or not): ok when no finding names it; restorable
/// as far as continuity says when ok.
fn verdicts(
    ids: &[String],
    survey: &Survey,
    scope: Option<&str>,
    findings: &[Finding],
    cont: &Continuity,
) -> Vec<BackupVerdict> {
    let unreadable = survey
        .unreadable
        .iter()
        .map(|(id, _)| id)
        .filter(|id| scope.is_none_or(|s| s == id.as_str()));
    let mut out: Vec<BackupVerdict> = ids
        .iter()
        .chain(unreadable)
        .map(|id| {
            let ok = !findings.iter().any(|f| f.backup() == Some(id.as_str()));
            let restorable = match cont.restorable.get(id) {
                Some(r) if ok => r.clone(),
                _ => Restorable::No,
            };
            BackupVerdict {
                id: id.clone(),
                ok,
                restorable,
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
