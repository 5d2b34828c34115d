//! Reading archived WAL back: every object opens (authenticates, decompresses), every segment
//! and `.partial` is the segment its name says (the one segment check,
//! [`Repository::check_wal`]), and every `.history` file parses.
//!
//! At most `parallel` files are in memory at once (one segment each).

use futures::stream::{self, StreamExt};

use crate::repository::{Repository, RepositoryError};
use crate::timeline::parse_history;
use crate::verify::report::Finding;
use crate::verify::{Tally, VerifyError};
use crate::wal::{WalFileName, WalKind};

/// Reads and checks `names` (with their stored sizes); returns what is wrong with them. A file
/// that disappeared since the listing (a concurrent `expire`) is skipped.
pub async fn verify_wal(
    repo: &Repository,
    names: Vec<(WalFileName, u64)>,
    parallel: usize,
    tally: &Tally,
) -> Result<Vec<Finding>, VerifyError> {
    let results: Vec<Result<Option<Finding>, VerifyError>> = stream::iter(names)
        .map(|(name, stored)| verify_one(repo, name, stored, tally))
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut findings = Vec::new();
    for r in results {
        findings.extend(r?);
    }
    findings.sort_by_key(|f| f.to_string());
    Ok(findings)
}

async fn verify_one(
    repo: &Repository,
    name: WalFileName,
    stored: u64,
    tally: &Tally,
) -> Result<Option<Finding>, VerifyError> {
    let damaged = |detail: String| {
        Ok(Some(Finding::WalDamaged {
            file: name.to_string(),
            detail,
        }))
    };
    let data = match repo.get_wal(&name).await {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) if super::objects::is_store_failure(&e) => return Err(e.into()),
        Err(e @ RepositoryError::Object { .. }) => return damaged(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    tally.add_wal(stored, data.len() as u64);
    match name.kind {
        WalKind::Segment | WalKind::Partial => match repo.check_wal(&name, &data) {
            Ok(()) => Ok(None),
            Err(e) => damaged(e.to_string()),
        },
        WalKind::History => match parse_history(name.timeline, &data) {
            Ok(_) => Ok(None),
            Err(e) => damaged(e.to_string()),
        },
        WalKind::Backup { .. } => Ok(None),
    }
}
