//! Waiting, at the end of a backup, for the WAL that makes it consistent to be archived: the
//! catalog (which makes the backup exist) is written only once that WAL is in the repository.

use std::time::{Duration, Instant};

use super::BackupError;
use crate::config::Config;
use crate::repository::Repository;
use crate::server;
use crate::survey::{self, Times};
use crate::timeline::{ArchiveModel, BackupPoint, TimelineTree};
use crate::wal::WalFileName;

/// Waits until every segment that makes the backup consistent is in the repository: from the
/// start to the stop segment, each on the timeline recovery will read it from (the archive
/// model's answer, which follows a timeline switch during the backup once the new timeline's
/// history file is archived).
pub(super) async fn wait_for_wal(
    repo: &Repository,
    id: &str,
    point: &BackupPoint,
    timeout: Duration,
    sql: &mut crate::protocol::Connection,
    config: &Config,
) -> Result<(), BackupError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let missing = match first_missing_for_consistency(repo, point).await {
            Ok(None) => return Ok(()),
            Ok(Some(name)) => name,
            Err(e) => return Err(e),
        };
        if started.elapsed() >= timeout {
            let status = match server::archiver_status(sql, config).await {
                Ok(s) => s.to_string(),
                Err(e) => format!("(pg_stat_archiver unavailable: {e})"),
            };
            return Err(BackupError::WalTimeout {
                id: id.to_string(),
                segment: missing.to_string(),
                waited: timeout.as_secs(),
                status,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The first segment the backup needs for consistency that is not archived yet.
async fn first_missing_for_consistency(
    repo: &Repository,
    point: &BackupPoint,
) -> Result<Option<WalFileName>, BackupError> {
    // With a timeline switch inside the backup the model needs the new timeline's history.
    let needed = if point.start_tli == point.stop_tli {
        let seg = repo.cluster().wal_segment_size;
        let model = ArchiveModel::new(seg, TimelineTree::default(), Vec::new(), Vec::new(), Default::default())
            .map_err(|e| BackupError::Internal(e.to_string()))?;
        model.consistency_segments(point)
    } else {
        survey::survey(repo, Times::None)
            .await?
            .model
            .consistency_segments(point)
    };
    for name in needed {
        if !repo.wal_exists(&name).await? {
            return Ok(Some(name));
        }
    }
    Ok(None)
}
