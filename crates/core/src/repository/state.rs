//! Small mutable records beside the immutable backups: pins (backups an operator told retention
//! never to touch) and the WAL horizon (where continuous WAL starts since the last `expire`).
//!
//! Catalogs are sealed once and never rewritten, so a pin cannot live inside one: each pin is its
//! own sealed object, `pins/<backup id>`, created by `pgvault pin` and deleted by `unpin`. The WAL
//! horizon is one sealed object written by `expire` *before* it deletes any WAL, so that `verify`
//! and `list` know that a missing stretch before it was removed on purpose (backups kept only by
//! the GFS counts or by a pin keep their own start-to-stop WAL, not everything after them), while a
//! missing segment after it is damage.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lsn::{Lsn, TimelineId};
use crate::repository::{catalog, layout, Repository, RepositoryError};

/// A backup that retention never expires (until `until`, when given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub backup: String,
    pub created_at: DateTime<Utc>,
    /// The pin lapses after this time (retention then treats the backup like any other).
    pub until: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

impl Pin {
    /// Whether the pin still protects its backup at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

/// Where the WAL that retention keeps continuous begins: from `lsn` on `timeline` (the start of
/// the oldest backup kept by `keep_full` or `recovery_window`) to the newest archived segment, on
/// every timeline leading from there. Before it, only each kept backup's own start-to-stop WAL is
/// promised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalHorizon {
    pub written_at: DateTime<Utc>,
    /// The backup whose start is the horizon.
    pub backup: String,
    pub timeline: TimelineId,
    pub lsn: Lsn,
}

impl Repository {
    /// Every pin, sorted by backup id. A pin object that cannot be read is an error: silently
    /// ignoring it could let retention delete a backup someone pinned.
    pub async fn pins(&self) -> Result<Vec<Pin>, RepositoryError> {
        let mut ids: Vec<String> = self
            .storage()
            .list(layout::PINS_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| o.key.rsplit('/').next().map(str::to_string))
            .filter(|id| catalog::is_backup_id(id))
            .collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let key = layout::pin_key(&id);
            let raw = self.get_sealed(&key).await?;
            let pin: Pin = serde_json::from_slice(&raw).map_err(|e| RepositoryError::BadCatalog {
                location: self.storage().to_string(),
                key: key.clone(),
                message: format!("not a valid pin: {e}"),
            })?;
            if pin.backup != id {
                return Err(RepositoryError::CatalogIdMismatch {
                    location: self.storage().to_string(),
                    key,
                    found: pin.backup,
                });
            }
            out.push(pin);
        }
        Ok(out)
    }

    /// Stores (or replaces) the pin of `pin.backup`.
    pub async fn put_pin(&self, pin: &Pin) -> Result<(), RepositoryError> {
        let body = serde_json::to_vec(pin).map_err(|e| RepositoryError::BadCatalog {
            location: self.storage().to_string(),
            key: layout::pin_key(&pin.backup),
            message: format!("cannot encode a pin: {e}"),
        })?;
        self.put_sealed(&layout::pin_key(&pin.backup), &body).await?;
        Ok(())
    }

    /// Removes the pin of backup `id` (no error when there is none).
    pub async fn delete_pin(&self, id: &str) -> Result<(), RepositoryError> {
        self.storage().delete(&layout::pin_key(id)).await?;
        Ok(())
    }

    /// The WAL horizon the last `expire` recorded, `None` when nothing was ever expired.
    pub async fn wal_horizon(&self) -> Result<Option<WalHorizon>, RepositoryError> {
        let raw = match self.get_sealed(layout::WAL_HORIZON_KEY).await {
            Err(RepositoryError::Storage(e)) if e.is_not_found() => return Ok(None),
            other => other?,
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| RepositoryError::BadCatalog {
                location: self.storage().to_string(),
                key: layout::WAL_HORIZON_KEY.to_string(),
                message: format!("not a valid WAL horizon: {e}"),
            })
    }

    /// Records the WAL horizon; `expire` does this before deleting any WAL.
    pub async fn set_wal_horizon(&self, horizon: &WalHorizon) -> Result<(), RepositoryError> {
        let body = serde_json::to_vec(horizon).map_err(|e| RepositoryError::BadCatalog {
            location: self.storage().to_string(),
            key: layout::WAL_HORIZON_KEY.to_string(),
            message: format!("cannot encode the WAL horizon: {e}"),
        })?;
        self.put_sealed(layout::WAL_HORIZON_KEY, &body).await?;
        Ok(())
    }
}
