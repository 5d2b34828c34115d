//! Declared WAL gaps: holes the archiver left on purpose, recorded in the repository.
//!
//! In asynchronous archiving, when the queue of un-archived WAL exceeds `archive_push_queue_max`
//! the archiver tells PostgreSQL a segment is archived without storing it (that is what keeps
//! `pg_wal` from filling the disk while the store is down). The archive then has a hole that no
//! later push can fill. The archive model would find the hole anyway (a missing segment between
//! archived ones), but not *why*: this records the why, as one small sealed object per dropped run,
//! `gaps/<timeline>/<first>-<last>`, so that `list`, `verify` and `restore` can say "dropped by
//! archive_push_queue_max at TIME" instead of a bare "missing". A marker never makes anything
//! recoverable; it only explains a hole.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::repository::{layout, Repository, RepositoryError};
use crate::wal::{WalFileName, WalKind};

/// Why the archiver drops WAL (the only reason today).
pub const REASON_QUEUE_MAX: &str = "archive_push_queue_max";

/// A run of segments of one timeline the archiver chose not to store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalGapMarker {
    pub first: WalFileName,
    pub last: WalFileName,
    /// When the (last) segment of the run was dropped.
    pub at: DateTime<Utc>,
    /// The setting or event that dropped it ([`REASON_QUEUE_MAX`]).
    pub reason: String,
}

impl WalGapMarker {
    /// The text `list`, `verify` and `restore` show for this hole.
    pub fn describe(&self) -> String {
        format!(
            "dropped by {} at {}",
            self.reason,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    /// Whether the marker is well formed: two segment names of one timeline, in order.
    pub fn is_valid(&self) -> bool {
        self.first.kind == WalKind::Segment
            && self.last.kind == WalKind::Segment
            && self.first.timeline == self.last.timeline
            && self.first <= self.last
    }
}

impl Repository {
    /// Records that `marker.first..=marker.last` was dropped. Replaces a marker of the same run.
    pub async fn put_wal_gap(&self, marker: &WalGapMarker) -> Result<(), RepositoryError> {
        let key = layout::wal_gap_key(&marker.first, &marker.last);
        let body = serde_json::to_vec(marker).map_err(|e| RepositoryError::BadCatalog {
            location: self.storage().to_string(),
            key: key.clone(),
            message: format!("cannot encode a WAL gap marker: {e}"),
        })?;
        self.put_sealed(&key, &body).await?;
        Ok(())
    }

    /// Every declared gap, oldest first. An unreadable marker is an error (it would hide why
    /// WAL is missing); one whose key and content disagree is ignored.
    pub async fn wal_gaps(&self) -> Result<Vec<WalGapMarker>, RepositoryError> {
        let mut keys: Vec<String> = self
            .storage()
            .list(layout::WAL_GAPS_PREFIX)
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| layout::wal_gap_of_key(k).is_some())
            .collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let raw = match self.get_sealed(&key).await {
                // Removed between the listing and the read (by `expire`): not there.
                Err(RepositoryError::Storage(e)) if e.is_not_found() => continue,
                other => other?,
            };
            let m: WalGapMarker = serde_json::from_slice(&raw).map_err(|e| RepositoryError::BadCatalog {
                location: self.storage().to_string(),
                key: key.clone(),
                message: format!("not a valid WAL gap marker: {e}"),
            })?;
            if m.is_valid() && layout::wal_gap_of_key(&key) == Some((m.first, m.last)) {
                out.push(m);
            }
        }
        out.sort_by_key(|m| (m.first, m.last));
        Ok(out)
    }
}
