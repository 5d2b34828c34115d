//! The short record of a verify run that the repository keeps (see
//! [`crate::repository::reports`]): enough for the metrics and alerts (when, whole or not, how
//! many findings), not the full report, which can be large for a damaged repository.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::repository::{Repository, RepositoryError};
use crate::verify::VerifyReport;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub id: String,
    pub finished_at: DateTime<Utc>,
    /// The one backup verified (`--backup`), `None` for the whole repository.
    pub scope: Option<String>,
    pub whole: bool,
    pub findings: usize,
    pub backups: usize,
    pub stored_bytes: u64,
    pub duration_ms: u64,
}

impl VerifyRecord {
    pub fn of(report: &VerifyReport, finished_at: DateTime<Utc>) -> VerifyRecord {
        VerifyRecord {
            id: finished_at.format("%Y%m%d-%H%M%S").to_string(),
            finished_at,
            scope: report.scope.clone(),
            whole: report.whole,
            findings: report.findings.len(),
            backups: report.backups.len(),
            stored_bytes: report.counts.stored_bytes,
            duration_ms: report.duration_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error("verify record {id} is not readable: {message}")]
    Unreadable { id: String, message: String },
}

/// Stores the record of `report`, finished at `finished_at`.
pub async fn store(
    repo: &Repository,
    report: &VerifyReport,
    finished_at: DateTime<Utc>,
) -> Result<VerifyRecord, RecordError> {
    let record = VerifyRecord::of(report, finished_at);
    let body = serde_json::to_vec(&record).map_err(|e| RecordError::Unreadable {
        id: record.id.clone(),
        message: e.to_string(),
    })?;
    repo.put_verify_report(&record.id, &body).await?;
    Ok(record)
}

/// The newest verify record, `None` when no verify was recorded.
pub async fn last(repo: &Repository) -> Result<Option<VerifyRecord>, RecordError> {
    let Some((id, body)) = repo.last_verify_report().await? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| RecordError::Unreadable {
            id,
            message: e.to_string(),
        })
}
