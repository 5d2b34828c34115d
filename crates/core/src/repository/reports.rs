//! The door for run reports: every `pgvault drill` and every `pgvault verify` (manual or
//! scheduled) stores a report of its outcome (sealed JSON), so that `list`, `doctor`, the
//! scheduler and the metrics can show the last outcome without running it again. The body is
//! opaque here (the drill and verify modules own their shapes). Ids are UTC timestamps
//! (`YYYYMMDD-HHMMSS`), so the newest sorts last.

use crate::repository::{layout, Repository, RepositoryError};

/// How many verify records are kept; older ones are removed when a new one is stored. Drill
/// reports are all kept (one a week is the usual pace, and each is evidence for an audit).
pub const VERIFY_RECORDS_KEPT: usize = 30;

/// Whether `id` looks like a report id (`YYYYMMDD-HHMMSS`, digits and one dash).
pub fn is_report_id(id: &str) -> bool {
    id.len() == 15
        && id
            .chars()
            .enumerate()
            .all(|(i, c)| if i == 8 { c == '-' } else { c.is_ascii_digit() })
}

/// The kinds of stored reports: where they live and how many are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Drill,
    Verify,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Drill => layout::DRILLS_PREFIX,
            Kind::Verify => layout::VERIFY_PREFIX,
        }
    }

    fn key(self, id: &str) -> String {
        match self {
            Kind::Drill => layout::drill_report_key(id),
            Kind::Verify => layout::verify_report_key(id),
        }
    }

    fn kept(self) -> Option<usize> {
        match self {
            Kind::Drill => None,
            Kind::Verify => Some(VERIFY_RECORDS_KEPT),
        }
    }
}

impl Repository {
    /// Stores the report of drill `id` (replacing one with the same id).
    pub async fn put_drill_report(&self, id: &str, body: &[u8]) -> Result<(), RepositoryError> {
        self.put_report(Kind::Drill, id, body).await
    }

    /// The ids of the stored drill reports, oldest first.
    pub async fn drill_ids(&self) -> Result<Vec<String>, RepositoryError> {
        self.report_ids(Kind::Drill).await
    }

    /// The newest drill's id and report body, `None` when no drill ran.
    pub async fn last_drill_report(&self) -> Result<Option<(String, Vec<u8>)>, RepositoryError> {
        self.last_report(Kind::Drill).await
    }

    /// Stores the record of verify run `id` (replacing one with the same id) and removes records
    /// beyond the newest [`VERIFY_RECORDS_KEPT`].
    pub async fn put_verify_report(&self, id: &str, body: &[u8]) -> Result<(), RepositoryError> {
        self.put_report(Kind::Verify, id, body).await
    }

    /// The ids of the stored verify records, oldest first.
    pub async fn verify_ids(&self) -> Result<Vec<String>, RepositoryError> {
        self.report_ids(Kind::Verify).await
    }

    /// The newest verify record's id and body, `None` when no verify was recorded.
    pub async fn last_verify_report(&self) -> Result<Option<(String, Vec<u8>)>, RepositoryError> {
        self.last_report(Kind::Verify).await
    }

    async fn put_report(&self, kind: Kind, id: &str, body: &[u8]) -> Result<(), RepositoryError> {
        self.put_sealed(&kind.key(id), body).await?;
        let Some(kept) = kind.kept() else {
            return Ok(());
        };
        let ids = self.report_ids(kind).await?;
        if ids.len() > kept {
            for old in &ids[..ids.len() - kept] {
                self.storage().delete(&kind.key(old)).await?;
            }
        }
        Ok(())
    }

    async fn report_ids(&self, kind: Kind) -> Result<Vec<String>, RepositoryError> {
        let mut ids: Vec<String> = self
            .storage()
            .list(kind.prefix())
            .await?
            .into_iter()
            .filter_map(|o| o.key.rsplit('/').next().map(str::to_string))
            .filter(|id| is_report_id(id))
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn last_report(&self, kind: Kind) -> Result<Option<(String, Vec<u8>)>, RepositoryError> {
        let Some(id) = self.report_ids(kind).await?.pop() else {
            return Ok(None);
        };
        let body = self.get_sealed(&kind.key(&id)).await?;
        Ok(Some((id, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_ids() {
        assert!(is_report_id("20261202-011500"));
        assert!(!is_report_id("20261202011500x"));
        assert!(!is_report_id("2026120-0115000"));
        assert!(!is_report_id("../../etc/passw"));
    }

    #[tokio::test]
    async fn verify_records_are_capped_and_drill_reports_kept() {
        let repo = crate::repository::synthetic::synthetic_repository(0).await.repo;
        for i in 0..(VERIFY_RECORDS_KEPT + 3) {
            let id = format!("20261202-01{:02}{:02}", i / 60, i % 60);
            repo.put_verify_report(&id, b"{}").await.expect("verify record");
            repo.put_drill_report(&id, b"{}").await.expect("drill report");
        }
        let verify = repo.verify_ids().await.expect("ids");
        assert_eq!(
            verify.len(),
            VERIFY_RECORDS_KEPT,
            "the oldest verify records are removed"
        );
        assert_eq!(verify.first().map(String::as_str), Some("20261202-010003"));
        assert_eq!(repo.drill_ids().await.expect("ids").len(), VERIFY_RECORDS_KEPT + 3);
        let (last, _) = repo.last_verify_report().await.expect("read").expect("one");
        assert_eq!(last, "20261202-010032");
    }
}
