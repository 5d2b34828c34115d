//! The door for verify records: every `pgvault verify` (manual or scheduled) stores a short
//! record of its outcome (sealed JSON) so that the metrics can report the last verify without
//! re-reading the repository. The body is opaque here (the verify module owns its shape); ids are
//! UTC timestamps as for drills ([`super::drills::is_drill_id`]), so the newest sorts last.

use crate::repository::drills::is_drill_id;
use crate::repository::{layout, Repository, RepositoryError};

/// How many verify records are kept; older ones are removed when a new one is stored.
pub const VERIFY_RECORDS_KEPT: usize = 30;

impl Repository {
    /// Stores the record of verify run `id` (replacing one with the same id) and removes records
    /// beyond the newest [`VERIFY_RECORDS_KEPT`].
    pub async fn put_verify_report(&self, id: &str, body: &[u8]) -> Result<(), RepositoryError> {
        self.put_sealed(&layout::verify_report_key(id), body).await?;
        let ids = self.verify_ids().await?;
        if ids.len() > VERIFY_RECORDS_KEPT {
            for old in &ids[..ids.len() - VERIFY_RECORDS_KEPT] {
                self.storage().delete(&layout::verify_report_key(old)).await?;
            }
        }
        Ok(())
    }

    /// The ids of the stored verify records, oldest first.
    pub async fn verify_ids(&self) -> Result<Vec<String>, RepositoryError> {
        let mut ids: Vec<String> = self
            .storage()
            .list(layout::VERIFY_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| o.key.rsplit('/').next().map(str::to_string))
            .filter(|id| is_drill_id(id))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The newest verify record's id and body, `None` when no verify was recorded.
    pub async fn last_verify_report(&self) -> Result<Option<(String, Vec<u8>)>, RepositoryError> {
        let Some(id) = self.verify_ids().await?.pop() else {
            return Ok(None);
        };
        let body = self.get_sealed(&layout::verify_report_key(&id)).await?;
        Ok(Some((id, body)))
    }
}
