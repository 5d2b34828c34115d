//! The backup index: the [`BackupSummary`] of every complete backup in one sealed object
//! (`index/backups`, format v2), so that `list`, `expire` and the survey behind `restore` read one
//! listing of `backups/` and one object instead of downloading and decrypting every catalog.
//!
//! The index is a **cache**, never the truth: a backup exists exactly when its catalog does
//! (docs/FORMAT.md). Every read reconciles the index with a listing of the backup directories:
//!
//! - a directory listed but missing from the index (a backup finished by an older pgvault, or an
//!   index update lost to a crash or to a concurrent writer) has its catalog loaded, and the
//!   repaired index is written back;
//! - an index entry whose directory is gone (deleted) is dropped;
//! - an index that cannot be read (missing, torn, corrupt, not this object) is rebuilt from the
//!   catalogs with a warning, never an error.
//!
//! Writers (a backup storing its catalog, `delete_backup`) update it read-modify-write without a
//! lock: two concurrent writers can lose each other's update, which the next read repairs from
//! the listing. Deleting removes the entry *before* the catalog goes and again after the objects
//! are gone, so an entry for a backup being deleted can outlive its catalog only while the
//! backup's directory still exists and only after a crash that raced a concurrent writer;
//! restore never trusts the index alone (see [`Repository::load_catalog_matching`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::repository::summary::{BackupSummary, SummaryListing};
use crate::repository::{layout, BackupCatalog, Repository, RepositoryError};

/// The version of the index object's JSON. A reader that finds a newer one neither trusts nor
/// overwrites it (it reads the catalogs instead).
pub const INDEX_VERSION: u32 = 1;

/// Catalogs loaded at once when the index lacks them.
const LOAD_PARALLEL: usize = 16;

/// The stored index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupIndex {
    pub index_version: u32,
    pub written_at: DateTime<Utc>,
    /// One entry per complete backup, sorted by id.
    pub backups: Vec<BackupSummary>,
}

/// What reading the index object found.
#[derive(Debug)]
pub(crate) enum IndexRead {
    Found(Vec<BackupSummary>),
    Missing,
    /// Torn, corrupt, not this object, or not an index: rebuilt from the catalogs.
    Unreadable(String),
    /// Written by a newer pgvault: not trusted, not overwritten.
    Newer(u32),
}

/// A change a writer makes while it reconciles.
#[derive(Clone, Debug)]
pub(crate) enum IndexChange {
    None,
    /// This backup's catalog was just stored.
    Stored(Box<BackupSummary>),
    /// This backup is being deleted: leave it out even while its directory is still listed.
    Removed(String),
}

/// The index reconciled with a listing of backup directories (see [`reconcile`]).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Reconciled {
    /// Entries whose directory is listed, by id.
    pub known: BTreeMap<String, BackupSummary>,
    /// Listed ids the index lacks: their catalogs must be loaded.
    pub to_load: Vec<String>,
    /// Whether the result differs from what was stored (entries dropped or added, or the
    /// stored order/duplicates were off).
    pub changed: bool,
}

/// Reconciles index `entries` with the backup ids `listed` and a writer's `change`. Pure.
pub(crate) fn reconcile(listed: &[String], entries: Vec<BackupSummary>, change: &IndexChange) -> Reconciled {
    let listed_set: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let stored = entries.len();
    let mut out = Reconciled::default();
    for e in entries {
        if listed_set.contains(e.id.as_str()) && !out.known.contains_key(&e.id) {
            out.known.insert(e.id.clone(), e);
        }
    }
    out.changed = out.known.len() != stored;
    match change {
        IndexChange::None => {}
        IndexChange::Stored(s) => {
            if out.known.get(&s.id) != Some(&**s) {
                out.known.insert(s.id.clone(), (**s).clone());
                out.changed = true;
            }
        }
        IndexChange::Removed(id) => {
            out.changed |= out.known.remove(id).is_some();
        }
    }
    let skip = match change {
        IndexChange::Stored(s) => Some(s.id.as_str()),
        IndexChange::Removed(id) => Some(id.as_str()),
        IndexChange::None => None,
    };
    out.to_load = listed_set
        .into_iter()
        .filter(|id| !out.known.contains_key(*id) && Some(*id) != skip)
        .map(str::to_string)
        .collect();
    out
}

impl Repository {
    /// Whether this repository keeps a backup index (format v2; a format-1 repository reads
    /// every catalog until it is upgraded).
    pub fn has_backup_index(&self) -> bool {
        self.object_version() >= 2
    }

    /// Reads the index object. Only the store failing is an error.
    pub(crate) async fn read_index(&self) -> Result<IndexRead, RepositoryError> {
        let key = layout::BACKUP_INDEX_KEY;
        let Some(raw) = self.storage().get_opt(key).await? else {
            return Ok(IndexRead::Missing);
        };
        let plain = match self.unseal(key, &raw) {
            Ok(p) => p,
            Err(e) => return Ok(IndexRead::Unreadable(e.to_string())),
        };
        let version = serde_json::from_slice::<serde_json::Value>(&plain)
            .ok()
            .and_then(|v| v.get("index_version").and_then(|n| n.as_u64()));
        if let Some(v) = version.filter(|v| *v > u64::from(INDEX_VERSION)) {
            return Ok(IndexRead::Newer(u32::try_from(v).unwrap_or(u32::MAX)));
        }
        match serde_json::from_slice::<BackupIndex>(&plain) {
            Ok(ix) => Ok(IndexRead::Found(ix.backups)),
            Err(e) => Ok(IndexRead::Unreadable(format!("not a backup index: {e}"))),
        }
    }

    /// Seals and stores the index of `backups` (replacing the previous one).
    pub(crate) async fn write_index(&self, backups: Vec<BackupSummary>) -> Result<(), RepositoryError> {
        let ix = BackupIndex {
            index_version: INDEX_VERSION,
            written_at: Utc::now(),
            backups,
        };
        let body = serde_json::to_vec(&ix).map_err(|e| RepositoryError::BadCatalog {
            location: self.storage().to_string(),
            key: layout::BACKUP_INDEX_KEY.to_string(),
            message: format!("cannot encode the backup index: {e}"),
        })?;
        self.put_sealed(layout::BACKUP_INDEX_KEY, &body).await?;
        Ok(())
    }

    /// Lists the backup directories, reconciles the index with them and `change`, loads the
    /// catalogs the index lacks, and writes the index back when it changed (a failed write is
    /// logged: the index is a cache). Returns the summaries, oldest first.
    pub(crate) async fn refresh_index(&self, change: IndexChange) -> Result<SummaryListing, RepositoryError> {
        let ids = self.backup_dir_ids().await?;
        let read = self.read_index().await?;
        let (entries, mut changed, writable) = match read {
            IndexRead::Found(e) => (e, false, true),
            IndexRead::Missing => (Vec::new(), false, true),
            IndexRead::Unreadable(why) => {
                tracing::warn!(
                    key = layout::BACKUP_INDEX_KEY,
                    "the backup index cannot be read ({why}); rebuilding it from the catalogs"
                );
                (Vec::new(), true, true)
            }
            IndexRead::Newer(v) => {
                tracing::warn!(
                    version = v,
                    "the backup index was written by a newer pgvault; reading the catalogs instead"
                );
                (Vec::new(), false, false)
            }
        };
        let mut r = reconcile(&ids, entries, &change);
        changed |= r.changed;
        let (loaded, unreadable) = self.load_summaries(&r.to_load).await?;
        changed |= !loaded.is_empty();
        for s in loaded {
            r.known.insert(s.id.clone(), s);
        }
        let backups: Vec<BackupSummary> = r.known.into_values().collect();
        if changed && writable {
            if let Err(e) = self.write_index(backups.clone()).await {
                tracing::warn!("could not update the backup index ({e}); the next listing repairs it");
            }
        }
        Ok(SummaryListing { backups, unreadable })
    }

    /// Loads the summaries of backups `ids` from their catalogs, a few at a time. A directory
    /// without a catalog (an unfinished backup) is skipped; an unreadable catalog is reported;
    /// the store failing is an error.
    async fn load_summaries(
        &self,
        ids: &[String],
    ) -> Result<(Vec<BackupSummary>, Vec<(String, RepositoryError)>), RepositoryError> {
        let results: Vec<(String, Result<BackupCatalog, RepositoryError>)> = stream::iter(ids.iter().cloned())
            .map(|id| async move {
                let r = self.load_catalog(&id).await;
                (id, r)
            })
            .buffer_unordered(LOAD_PARALLEL)
            .collect()
            .await;
        let mut loaded = Vec::new();
        let mut unreadable = Vec::new();
        for (id, r) in results {
            match r {
                Ok(c) => loaded.push(BackupSummary::from(&c)),
                Err(RepositoryError::BackupNotFound { .. }) => {}
                Err(e @ RepositoryError::Storage(_)) => return Err(e),
                Err(e) => unreadable.push((id, e)),
            }
        }
        unreadable.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((loaded, unreadable))
    }

    /// Loads the catalog of the backup `summary` describes and checks that it says the same:
    /// what restore and copy chose from the index is never trusted from the index alone. On a
    /// mismatch the index is repaired and an error asks to run the command again.
    pub async fn load_catalog_matching(&self, summary: &BackupSummary) -> Result<BackupCatalog, RepositoryError> {
        let cat = self.load_catalog(&summary.id).await?;
        let real = BackupSummary::from(&cat);
        if real == *summary {
            return Ok(cat);
        }
        if self.has_backup_index() {
            if let Err(e) = self.refresh_index(IndexChange::Stored(Box::new(real))).await {
                tracing::warn!("could not repair the backup index: {e}");
            }
        }
        Err(RepositoryError::IndexDisagreed {
            location: self.storage().to_string(),
            id: summary.id.clone(),
        })
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
