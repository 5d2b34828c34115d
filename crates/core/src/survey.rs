//! Reads a repository into the archive model ([`crate::timeline`]).
//!
//! The model is pure logic; this is the one place that gathers its inputs from a repository:
//! the listing of archived WAL, the `.history` files (parsed into the timeline tree), the
//! backups' summaries (from the backup index, [`crate::repository::index`], not from every
//! catalog), and, where a question needs them, the commit times and restore points that
//! push recorded with each segment. `restore`, `list`, `copy` and `backup` all start here, so
//! they all see the same archive.
//!
//! Segment times are read only when asked for ([`Times`]): restore to a time or a name needs
//! them for the segments after each backup; `list` needs only the times at the windows' ends
//! ([`Times::WindowEnds`], a handful of reads whatever the archive's size); a restore to an LSN
//! needs none. Reading them costs one small ranged read per segment, done a few dozen at a time.

use std::collections::HashMap;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::lsn::TimelineId;
use crate::repository::summary::BackupSummary;
use crate::repository::{Repository, RepositoryError};
use crate::storage::ObjectInfo;
use crate::timeline::{
    parse_history, ArchiveModel, BackupPoint, DeclaredGap, HistoryEntry, ModelError, RestorePoint, SegmentTimes,
    TimelineError, TimelineTree,
};
use crate::wal::{WalFileName, WalKind, WalSummary};

/// Metadata reads in flight at once.
const TIMES_PARALLEL: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error("archived history file {name}: {source}")]
    History { name: String, source: TimelineError },
    #[error("the archive's history files disagree: {0}")]
    Tree(TimelineError),
    #[error("{0}")]
    Model(#[from] ModelError),
}

/// Which segments' recorded times to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    /// None: LSN-only questions.
    None,
    /// Every segment from the oldest backup's start on (time and name targets: restore).
    AfterOldestBackup,
    /// Only what the windows' end times need (listing): for each window, its segments from the
    /// end back to the newest one with a recorded commit, and the first segment after each
    /// gap. The segments not read are given empty times (no commits, no restore points), so
    /// window end times equal what [`Times::AfterOldestBackup`] gives as long as commit times
    /// grow with the LSN; restore points are not read, so this is not for restore.
    WindowEnds,
}

/// What a repository holds, as the archive model sees it.
pub struct Survey {
    pub model: ArchiveModel,
    /// The complete backups whose catalog is readable, oldest first.
    pub backups: Vec<BackupSummary>,
    /// Backups whose catalog could not be read: `(id, why)`. Each blocks only itself.
    pub unreadable: Vec<(String, String)>,
    /// Every archived WAL object, sorted by name.
    pub wal: Vec<(WalFileName, ObjectInfo)>,
}

impl Survey {
    pub fn backup(&self, id: &str) -> Option<&BackupSummary> {
        self.backups.iter().find(|c| c.id == id)
    }
}

/// Reads the repository's WAL listing, history files and catalogs, and builds the model.
pub async fn survey(repo: &Repository, times: Times) -> Result<Survey, SurveyError> {
    let listing = repo.backup_summaries().await?;
    let unreadable = listing
        .unreadable
        .iter()
        .map(|(id, e)| (id.clone(), e.to_string()))
        .collect();
    let wal = repo.list_wal().await?;
    let tree = read_tree(repo, &wal).await?;
    let seg = repo.cluster().wal_segment_size;
    let backups: Vec<BackupPoint> = listing.backups.iter().map(BackupSummary::point).collect();
    let times = match times {
        Times::None => HashMap::new(),
        Times::AfterOldestBackup => {
            let from = backups
                .iter()
                .map(|b| b.start_lsn.segment(seg))
                .min()
                .unwrap_or(u64::MAX);
            let wanted: Vec<WalFileName> = names(&wal)
                .filter(|n| n.kind == WalKind::Segment && n.segment_number(seg) >= from)
                .collect();
            read_times(repo, wanted).await?
        }
        Times::WindowEnds => {
            let bare = ArchiveModel::new(seg, tree.clone(), names(&wal), backups.clone(), HashMap::new())?;
            window_end_times(repo, &bare, &wal).await?
        }
    };
    let mut model = ArchiveModel::new(seg, tree, names(&wal), backups, times)?;
    model.set_declared_gaps(declared_gaps(repo).await?);
    Ok(Survey {
        model,
        backups: listing.backups,
        unreadable,
        wal,
    })
}

/// The holes the archiver recorded on purpose ([`crate::repository::gaps`]), for the model.
async fn declared_gaps(repo: &Repository) -> Result<Vec<DeclaredGap>, RepositoryError> {
    Ok(repo
        .wal_gaps()
        .await?
        .into_iter()
        .map(|m| DeclaredGap {
            reason: m.describe(),
            first: m.first,
            last: m.last,
        })
        .collect())
}

fn names(wal: &[(WalFileName, ObjectInfo)]) -> impl Iterator<Item = WalFileName> + '_ {
    wal.iter().map(|(n, _)| *n)
}

/// The times [`Times::WindowEnds`] reads, with empty times for every other archived segment.
async fn window_end_times(
    repo: &Repository,
    model: &ArchiveModel,
    wal: &[(WalFileName, ObjectInfo)],
) -> Result<HashMap<WalFileName, SegmentTimes>, SurveyError> {
    let ss = model.segment_size();
    let mut read: HashMap<WalFileName, Option<SegmentTimes>> = HashMap::new();
    for tw in model.windows_by_timeline() {
        for w in &tw.windows {
            let first = w.start_lsn.segment(ss);
            let mut next = w.end_lsn.0.div_ceil(ss);
            // From the end back, in batches that double (1, 2, 4, … segments), to the newest
            // segment with a commit: usually the last one.
            let mut batch_len = 1u64;
            'walk: while next > first {
                let from = next.saturating_sub(batch_len).max(first);
                batch_len = (batch_len * 2).min(TIMES_PARALLEL as u64);
                let batch: Vec<WalFileName> = (from..next)
                    .rev()
                    .map(|n| model.expected_segment(tw.tli, n))
                    .filter(|n| model.is_archived(n))
                    .collect();
                fetch_times(repo, &batch, &mut read).await?;
                for name in &batch {
                    match read.get(name) {
                        Some(Some(t)) if t.last_commit.is_none() => continue,
                        // A commit, or a segment without recorded times (the end time is unknown).
                        _ => break 'walk,
                    }
                }
                next = from;
            }
        }
    }
    let after_gaps: Vec<WalFileName> = model
        .gaps()
        .iter()
        .map(|g| WalFileName::from_segment_number(g.tli, g.last_missing.segment_number(ss) + 1, ss))
        .filter(|n| model.is_archived(n))
        .collect();
    fetch_times(repo, &after_gaps, &mut read).await?;
    let mut times: HashMap<WalFileName, SegmentTimes> = names(wal)
        .filter(|n| n.kind == WalKind::Segment && !read.contains_key(n))
        .map(|n| (n, SegmentTimes::default()))
        .collect();
    times.extend(read.into_iter().filter_map(|(n, t)| t.map(|t| (n, t))));
    Ok(times)
}

/// Reads the times of those of `names` not read yet into `read` (`None`: none recorded).
async fn fetch_times(
    repo: &Repository,
    names: &[WalFileName],
    read: &mut HashMap<WalFileName, Option<SegmentTimes>>,
) -> Result<(), SurveyError> {
    let wanted: Vec<WalFileName> = names.iter().filter(|n| !read.contains_key(n)).copied().collect();
    let found: Vec<(WalFileName, Option<SegmentTimes>)> = stream::iter(wanted)
        .map(|name| async move { Ok::<_, RepositoryError>((name, segment_times(repo, &name).await?)) })
        .buffer_unordered(TIMES_PARALLEL)
        .try_collect()
        .await?;
    read.extend(found);
    Ok(())
}

/// Parses every archived `.history` file into the timeline tree.
async fn read_tree(repo: &Repository, wal: &[(WalFileName, ObjectInfo)]) -> Result<TimelineTree, SurveyError> {
    let mut histories: Vec<(TimelineId, Vec<HistoryEntry>)> = Vec::new();
    for (name, _) in wal.iter().filter(|(n, _)| n.kind == WalKind::History) {
        // Listed a moment ago: gone now means another command removed it; treat as absent.
        let Some(content) = repo.get_wal(name).await? else {
            continue;
        };
        let entries = parse_history(name.timeline, &content).map_err(|source| SurveyError::History {
            name: name.to_string(),
            source,
        })?;
        histories.push((name.timeline, entries));
    }
    TimelineTree::from_histories(histories).map_err(SurveyError::Tree)
}

/// The times push recorded with each segment (segments pushed before it recorded them have none).
async fn read_times(
    repo: &Repository,
    names: Vec<WalFileName>,
) -> Result<HashMap<WalFileName, SegmentTimes>, SurveyError> {
    let found: Vec<Option<(WalFileName, SegmentTimes)>> = stream::iter(names)
        .map(|name| async move { Ok::<_, RepositoryError>(segment_times(repo, &name).await?.map(|t| (name, t))) })
        .buffer_unordered(TIMES_PARALLEL)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// The commit times and restore points push recorded with segment `name`, if it recorded them
/// (segments pushed before pgvault recorded them, or in a v1 repository, have none).
pub async fn segment_times(repo: &Repository, name: &WalFileName) -> Result<Option<SegmentTimes>, RepositoryError> {
    let Some(meta) = repo.wal_metadata(name).await? else {
        return Ok(None);
    };
    // Unparseable metadata is treated as absent: the segment itself is still good WAL.
    let Ok(summary) = serde_json::from_slice::<WalSummary>(&meta) else {
        tracing::warn!(wal = %name, "the metadata stored with this segment is not a WAL summary; its times are ignored");
        return Ok(None);
    };
    Ok(Some(times_of(&summary)))
}

/// The model's view of what push recorded.
pub fn times_of(s: &WalSummary) -> SegmentTimes {
    SegmentTimes {
        first_commit: s.first_commit,
        last_commit: s.last_commit,
        restore_points: s
            .restore_points
            .iter()
            .map(|r| RestorePoint {
                name: r.name.clone(),
                lsn: r.lsn,
                time: r.time,
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "survey_tests.rs"]
mod tests;
