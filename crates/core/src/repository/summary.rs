//! A backup's summary: what listing, retention and the archive model need to know of a backup,
//! without its file list. A catalog of a large cluster holds one entry per file and piece (megabytes
//! for a big cluster); a summary is a few hundred bytes, so commands that reason about many
//! backups (`list`, `expire`, the survey behind `restore`) work from summaries and load a full
//! catalog only for the backup they restore, copy or verify.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lsn::{Lsn, TimelineId};
use crate::repository::catalog::{BackupCatalog, BackupKind};
use crate::repository::index::IndexChange;
use crate::repository::meta::u64_string;
use crate::repository::{Repository, RepositoryError};
use crate::timeline::BackupPoint;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub id: String,
    pub label: String,
    pub kind: BackupKind,
    /// The backup this one depends on (see [`BackupCatalog::parent`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(with = "u64_string")]
    pub system_identifier: u64,
    pub pg_version_num: u32,
    pub timeline: TimelineId,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub stop_timeline: TimelineId,
    pub start_wal: String,
    pub stop_wal: String,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub wal_included: bool,
    pub snapshot_after_stop: Option<String>,
    pub size: u64,
    pub stored_size: u64,
    /// Number of files in the backup.
    pub file_count: u64,
    pub compression: String,
    pub encrypted: bool,
}

impl From<&BackupCatalog> for BackupSummary {
    fn from(c: &BackupCatalog) -> Self {
        BackupSummary {
            id: c.id.clone(),
            label: c.label.clone(),
            kind: c.kind,
            parent: c.parent.clone(),
            system_identifier: c.system_identifier,
            pg_version_num: c.pg_version_num,
            timeline: c.timeline,
            start_lsn: c.start_lsn,
            stop_lsn: c.stop_lsn,
            stop_timeline: c.stop_timeline,
            start_wal: c.start_wal.clone(),
            stop_wal: c.stop_wal.clone(),
            start_time: c.start_time,
            stop_time: c.stop_time,
            wal_included: c.wal_included,
            snapshot_after_stop: c.snapshot_after_stop.clone(),
            size: c.size,
            stored_size: c.stored_size,
            file_count: c.files.len() as u64,
            compression: c.compression.clone(),
            encrypted: c.encrypted,
        }
    }
}

impl BackupSummary {
    /// The backup as the archive model sees it.
    pub fn point(&self) -> BackupPoint {
        BackupPoint {
            id: self.id.clone(),
            start_tli: self.timeline,
            start_lsn: self.start_lsn,
            stop_tli: self.stop_timeline,
            stop_lsn: self.stop_lsn,
            stop_time: self.stop_time,
            wal_included: self.wal_included,
        }
    }
}

/// The summaries of a repository's complete backups, oldest first, and the backups whose
/// catalog could not be read (each blocks only itself).
#[derive(Debug, Default)]
pub struct SummaryListing {
    pub backups: Vec<BackupSummary>,
    pub unreadable: Vec<(String, RepositoryError)>,
}

impl Repository {
    /// The summary of every complete backup, oldest first.
    ///
    /// In format v2 this is answered from the backup index ([`super::index`]): one listing of
    /// `backups/` plus one object, with the catalogs the index lacks loaded (and the index
    /// repaired). A format-1 repository reads every catalog.
    pub async fn backup_summaries(&self) -> Result<SummaryListing, RepositoryError> {
        if self.has_backup_index() {
            return self.refresh_index(IndexChange::None).await;
        }
        let listing = self.backup_listing().await?;
        Ok(SummaryListing {
            backups: listing.backups.iter().map(BackupSummary::from).collect(),
            unreadable: listing.unreadable,
        })
    }
}
