//! The door for drill reports: every `pgvault drill` stores its report (sealed JSON) so that
//! `list` and metrics can show the last drill's outcome without re-running it. The body is
//! opaque here (the drill module owns its shape); ids are UTC timestamps, so the newest sorts last.

use crate::repository::{layout, Repository, RepositoryError};

/// Whether `id` looks like a drill id (`YYYYMMDD-HHMMSS`, digits and one dash).
pub fn is_drill_id(id: &str) -> bool {
    id.len() == 15
        && id
            .chars()
            .enumerate()
            .all(|(i, c)| if i == 8 { c == '-' } else { c.is_ascii_digit() })
}

impl Repository {
    /// Stores the report of drill `id` (replacing one with the same id).
    pub async fn put_drill_report(&self, id: &str, body: &[u8]) -> Result<(), RepositoryError> {
        self.put_sealed(&layout::drill_report_key(id), body).await?;
        Ok(())
    }

    /// The ids of the stored drill reports, oldest first.
    pub async fn drill_ids(&self) -> Result<Vec<String>, RepositoryError> {
        let mut ids: Vec<String> = self
            .storage()
            .list(layout::DRILLS_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| o.key.rsplit('/').next().map(str::to_string))
            .filter(|id| is_drill_id(id))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The newest drill's id and report body, `None` when no drill ran.
    pub async fn last_drill_report(&self) -> Result<Option<(String, Vec<u8>)>, RepositoryError> {
        let Some(id) = self.drill_ids().await?.pop() else {
            return Ok(None);
        };
        let body = self.get_sealed(&layout::drill_report_key(&id)).await?;
        Ok(Some((id, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::is_drill_id;

    #[test]
    fn drill_ids() {
        assert!(is_drill_id("20261202-011500"));
        assert!(!is_drill_id("20261202011500x"));
        assert!(!is_drill_id("2026120-0115000"));
        assert!(!is_drill_id("../../etc/passw"));
    }
}
