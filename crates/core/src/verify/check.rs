//! `pgvault check`: proves the archive path end to end, as pgBackRest users know it.
//!
//! A backup is only as good as the WAL after it, and an `archive_command` that fails (a typo, a
//! full disk, an expired credential) is silent until someone needs that WAL. `check` makes sure
//! the current segment holds WAL (a transaction id, so a commit record is written: on an idle
//! server `pg_switch_wal()` would otherwise do nothing), switches to a new segment, and waits until
//! the completed segment is in the repository. When it does not arrive, `pg_stat_archiver` says
//! why, and the error names `archive_command`.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::lsn::Lsn;
use crate::protocol::Connection;
use crate::repository::{Repository, RepositoryError};
use crate::server::{self, ArchiverStatus, ServerError};
use crate::wal::WalFileName;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error("PostgreSQL at {target} is a standby (in recovery): run `pgvault check` against the primary, which is the server that switches and archives WAL")]
    Standby { target: String },
    #[error("PostgreSQL at {target} does not archive WAL ({status}): set archive_mode = on and archive_command = 'pgvault-archive push %p'")]
    NotArchiving { target: String, status: String },
    #[error("archive_command is failing: PostgreSQL at {target} could not archive WAL segment {segment} ({status}); look at the server log for archive_command's output")]
    ArchiveFailing {
        target: String,
        segment: String,
        status: String,
    },
    #[error("WAL segment {segment} did not reach the repository {location} within {waited}s: archive_command is not archiving into this repository ({status})")]
    Timeout {
        segment: String,
        location: String,
        waited: u64,
        status: String,
    },
    #[error("PostgreSQL at {target}: {detail}")]
    Unexpected { target: String, detail: String },
}

#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// How long to wait for the segment to arrive.
    pub timeout: Duration,
}

impl CheckOptions {
    pub fn from_config(config: &Config) -> CheckOptions {
        CheckOptions {
            timeout: Duration::from_secs(config.backup.archive_wait_timeout),
        }
    }
}

/// The segment that went through the archive path.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckReport {
    pub segment: String,
    /// Where `pg_switch_wal()` ended the segment.
    pub switch_lsn: Lsn,
    pub waited_ms: u64,
}

/// Switches WAL on the server of `config` and waits until the completed segment is in `repo`.
pub async fn check(config: &Config, repo: &Repository, opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let target = server::describe(config);
    let unexpected = |detail: String| CheckError::Unexpected {
        target: target.clone(),
        detail,
    };
    let mut repl = server::connect(config, true).await?;
    let (identity, _) = server::cluster_identity(&mut repl, config).await?;
    let _ = repl.close().await;
    repo.check_cluster(&identity)?;
    let mut sql = server::connect(config, false).await?;
    let row = server::query_row(
        &mut sql,
        config,
        "asking whether the server is a standby",
        "SELECT pg_is_in_recovery()::text",
    )
    .await?;
    if row.first().cloned().flatten().as_deref() == Some("true") {
        return Err(CheckError::Standby { target });
    }
    let status = server::archiver_status(&mut sql, config).await?;
    if status.archive_mode == "off" || status.archive_command.trim().is_empty() {
        return Err(CheckError::NotArchiving {
            target,
            status: status.to_string(),
        });
    }
    // A commit record in the current segment, so that the switch below really switches.
    server::query_row(
        &mut sql,
        config,
        "writing a transaction id",
        "SELECT txid_current()::text",
    )
    .await?;
    let row = server::query_row(
        &mut sql,
        config,
        "switching WAL (pg_switch_wal needs superuser or EXECUTE on it)",
        "SELECT lsn::text, pg_walfile_name(lsn) FROM pg_switch_wal() AS lsn",
    )
    .await?;
    let lsn: Lsn = row
        .first()
        .cloned()
        .flatten()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unexpected(format!("pg_switch_wal() returned {row:?}")))?;
    let seg_text = row.get(1).cloned().flatten().unwrap_or_default();
    let segment = WalFileName::parse(&seg_text).map_err(|e| unexpected(format!("pg_walfile_name: {e}")))?;
    tracing::info!(%segment, %lsn, "switched WAL; waiting for the segment to be archived");
    let waited = wait_archived(config, repo, &mut sql, &segment, opts.timeout).await?;
    let _ = sql.close().await;
    Ok(CheckReport {
        segment: segment.to_string(),
        switch_lsn: lsn,
        waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Polls the repository until `segment` is stored; fails early when the archiver reports that
/// archiving that very segment failed.
async fn wait_archived(
    config: &Config,
    repo: &Repository,
    sql: &mut Connection,
    segment: &WalFileName,
    timeout: Duration,
) -> Result<Duration, CheckError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut next_status = Duration::from_secs(1);
    loop {
        if repo.wal_exists(segment).await? {
            return Ok(started.elapsed());
        }
        let elapsed = started.elapsed();
        if elapsed >= next_status || elapsed >= timeout {
            next_status = elapsed + Duration::from_secs(2);
            let status = server::archiver_status(sql, config).await?;
            if failing_on(&status, segment) {
                return Err(CheckError::ArchiveFailing {
                    target: server::describe(config),
                    segment: segment.to_string(),
                    status: status.to_string(),
                });
            }
            if elapsed >= timeout {
                return Err(CheckError::Timeout {
                    segment: segment.to_string(),
                    location: repo.storage().to_string(),
                    waited: timeout.as_secs(),
                    status: status.to_string(),
                });
            }
        }
        tokio::time::sleep(
            delay
                .min(timeout.saturating_sub(elapsed))
                .max(Duration::from_millis(10)),
        )
        .await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Whether the archiver's latest failure is `segment` (or a segment after it, which it can
/// only reach once `segment` itself was handed over) and is newer than its latest success.
fn failing_on(status: &ArchiverStatus, segment: &WalFileName) -> bool {
    let Some(failed) = status
        .last_failed_wal
        .as_deref()
        .and_then(|n| WalFileName::parse(n).ok())
    else {
        return false;
    };
    let newer_than_success = match (&status.last_failed_time, &status.last_archived_time) {
        (Some(f), Some(a)) => f > a,
        _ => true,
    };
    failed.timeline == segment.timeline && (failed.log, failed.seg) >= (segment.log, segment.seg) && newer_than_success
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_on_the_switched_segment_is_recognised() {
        let seg = WalFileName::parse("000000010000000000000005").expect("name");
        let mut s = ArchiverStatus {
            last_failed_wal: Some("000000010000000000000005".into()),
            last_failed_time: Some("2026-12-02 00:00:02+00".into()),
            last_archived_time: Some("2026-12-02 00:00:01+00".into()),
            ..ArchiverStatus::default()
        };
        assert!(failing_on(&s, &seg));
        s.last_failed_wal = Some("000000010000000000000004".into());
        assert!(
            !failing_on(&s, &seg),
            "an older failure may be followed by success on ours"
        );
        s.last_failed_wal = Some("000000010000000000000005".into());
        s.last_archived_time = Some("2026-12-02 00:00:03+00".into());
        assert!(!failing_on(&s, &seg), "archived after the failure");
        s.last_failed_wal = None;
        assert!(!failing_on(&s, &seg));
    }
}
