//! What `verify` found, as data: typed [`Finding`]s (the JSON output and the exit status both
//! derive from them, so they cannot disagree), a verdict per backup, and the windows and gaps per
//! timeline.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::lsn::{Lsn, TimelineId};

/// One thing wrong with the repository. Every finding is damage: a repository with any finding
/// is not whole, and `pgvault verify` exits 4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The backup's catalog cannot be read (so nothing of the backup can be restored).
    CatalogUnreadable { backup: String, detail: String },
    /// A bundle the catalog lists is not in the store.
    BundleMissing { backup: String, bundle: u32 },
    /// A bundle failed authentication, decompression, its size, or the SHA-256 of a piece.
    /// `file`: the file whose piece failed, when the failure is in one piece.
    BundleDamaged {
        backup: String,
        bundle: u32,
        file: Option<String>,
        offset: Option<u64>,
        detail: String,
    },
    /// The catalog records a `backup_manifest` that is not stored.
    ManifestMissing { backup: String },
    /// The stored `backup_manifest` fails its SHA-256, does not open, does not parse, or does
    /// not agree with the catalog's files.
    ManifestDamaged { backup: String, detail: String },
    /// An archived WAL file does not open or is not the segment its name says.
    WalDamaged { file: String, detail: String },
    /// A segment between the backup's start and stop (what makes it consistent) is missing.
    BackupWalMissing { backup: String, segment: String },
    /// Missing WAL after the horizon on a timeline that leads to the newest timeline or to a
    /// backup: no recovery can cross it. `after`/`before`: the last commit known before the gap
    /// and the first known after it.
    /// `window_from`: the backup whose recoverable window this gap ends (at `first_missing`'s
    /// start), when one does.
    WalGap {
        timeline: TimelineId,
        first_missing: String,
        last_missing: String,
        after: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
        window_from: Option<String>,
        window_end: Option<Lsn>,
        /// Why it is missing, when that was recorded (the archiver dropped it on purpose).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A timeline other than 1 that WAL or a backup needs has no `.history` file: PostgreSQL
    /// cannot follow it.
    HistoryMissing { timeline: TimelineId },
    /// An incremental backup's parent (a link of its chain) is not in the repository.
    ParentMissing { backup: String, parent: String },
    /// A link of an incremental backup's chain has findings of its own, so the backup cannot
    /// be restored either.
    ParentDamaged { backup: String, parent: String },
}

impl Finding {
    /// The backup this finding makes unrestorable, if it is about one backup.
    pub fn backup(&self) -> Option<&str> {
        match self {
            Finding::CatalogUnreadable { backup, .. }
            | Finding::BundleMissing { backup, .. }
            | Finding::BundleDamaged { backup, .. }
            | Finding::ManifestMissing { backup }
            | Finding::ManifestDamaged { backup, .. }
            | Finding::BackupWalMissing { backup, .. }
            | Finding::ParentMissing { backup, .. }
            | Finding::ParentDamaged { backup, .. } => Some(backup),
            Finding::WalDamaged { .. } | Finding::WalGap { .. } | Finding::HistoryMissing { .. } => None,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |x: &Option<DateTime<Utc>>| x.map_or_else(|| "unknown".to_string(), |t| t.to_rfc3339());
        match self {
            Finding::CatalogUnreadable { backup, detail } => write!(f, "backup {backup}: catalog unreadable: {detail}"),
            Finding::BundleMissing { backup, bundle } => write!(f, "backup {backup}: bundle {bundle} is missing"),
            Finding::BundleDamaged {
                backup,
                bundle,
                file,
                offset,
                detail,
            } => {
                write!(f, "backup {backup}: bundle {bundle}")?;
                if let Some(file) = file {
                    write!(f, ", file {file}")?;
                }
                if let Some(o) = offset {
                    write!(f, " (bundle offset {o})")?;
                }
                write!(f, ": {detail}")
            }
            Finding::ManifestMissing { backup } => write!(f, "backup {backup}: backup_manifest is missing"),
            Finding::ManifestDamaged { backup, detail } => write!(f, "backup {backup}: backup_manifest: {detail}"),
            Finding::WalDamaged { file, detail } => write!(f, "WAL {file}: {detail}"),
            Finding::ParentMissing { backup, parent } => write!(
                f,
                "backup {backup}: it is incremental and its parent {parent} is not in the repository (the chain is broken)"
            ),
            Finding::ParentDamaged { backup, parent } => write!(
                f,
                "backup {backup}: the link {parent} of its chain is damaged (see its findings)"
            ),
            Finding::BackupWalMissing { backup, segment } => write!(
                f,
                "backup {backup}: WAL segment {segment} (between its start and stop) is missing"
            ),
            Finding::WalGap {
                timeline,
                first_missing,
                last_missing,
                after,
                before,
                window_from,
                window_end,
                reason,
            } => {
                if first_missing == last_missing {
                    write!(f, "timeline {timeline}: WAL segment {first_missing} is missing")?;
                } else {
                    write!(
                        f,
                        "timeline {timeline}: WAL segments {first_missing}..{last_missing} are missing"
                    )?;
                }
                if let Some(r) = reason {
                    write!(f, " ({r}; take a new full backup)")?;
                }
                write!(
                    f,
                    "; no recovery crosses it (last commit before: {}, first after: {})",
                    t(after),
                    t(before)
                )?;
                if let (Some(b), Some(end)) = (window_from, window_end) {
                    write!(f, "; the window from backup {b} ends at {end}")?;
                }
                Ok(())
            }
            Finding::HistoryMissing { timeline } => {
                write!(
                    f,
                    "timeline {timeline}: its history file {timeline:08X}.history is missing"
                )
            }
        }
    }
}

/// How far a backup can be restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Restorable {
    /// Not at all (its own objects or the WAL that makes it consistent are damaged or missing).
    No,
    /// To its consistent point only: its WAL after that was expired on purpose (it lies before
    /// the horizon) or is missing.
    EndPoint { lsn: Lsn, time: DateTime<Utc> },
    /// To any point of this window (from its consistent point on).
    Window {
        timeline: TimelineId,
        start_lsn: Lsn,
        start_time: DateTime<Utc>,
        end_lsn: Lsn,
        end_time: Option<DateTime<Utc>>,
    },
}

/// One backup's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupVerdict {
    pub id: String,
    /// No finding names this backup.
    pub ok: bool,
    pub restorable: Restorable,
}

/// A run of missing segments of one timeline, and whether it is damage (after the horizon) or
/// WAL that was expired on purpose (before it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GapReport {
    pub first_missing: String,
    pub last_missing: String,
    pub damage: bool,
    /// Why it is missing, when that was recorded (e.g. dropped by `archive_push_queue_max`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A recoverable window of one timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WindowReport {
    pub from_backup: String,
    pub start_lsn: Lsn,
    pub start_time: DateTime<Utc>,
    pub end_lsn: Lsn,
    pub end_time: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineReport {
    pub timeline: TimelineId,
    pub windows: Vec<WindowReport>,
    pub gaps: Vec<GapReport>,
}

/// Where continuous WAL is required from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HorizonReport {
    pub timeline: TimelineId,
    pub lsn: Lsn,
    /// `expire` (the recorded WAL horizon) or `oldest_backup`.
    pub source: &'static str,
}

/// What was read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub backups: u64,
    pub bundles: u64,
    pub manifests: u64,
    pub wal_files: u64,
    /// Stored (compressed, encrypted) bytes downloaded.
    pub stored_bytes: u64,
    /// Plaintext bytes checked.
    pub plain_bytes: u64,
}

/// The outcome of `verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub repository: String,
    /// The one backup verified (`--backup`), or `None` for the whole repository.
    pub scope: Option<String>,
    pub whole: bool,
    pub findings: Vec<Finding>,
    pub backups: Vec<BackupVerdict>,
    pub timelines: Vec<TimelineReport>,
    pub horizon: Option<HorizonReport>,
    pub counts: Counts,
    pub duration_ms: u64,
}

impl VerifyReport {
    /// `pgvault verify`'s exit status: 0 whole, 4 damage or a gap found.
    pub fn exit_code(&self) -> u8 {
        if self.findings.is_empty() {
            0
        } else {
            4
        }
    }
}
