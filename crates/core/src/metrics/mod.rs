//! Prometheus metrics of a repository and its cluster: what `pgvault schedule` serves on
//! `/metrics` and `pgvault metrics` prints or writes as a node_exporter textfile.
//!
//! Split in three so each part is testable alone: [`collect`] reads the repository (through
//! [`Repository`](crate::repository::Repository) and the survey, never by key) and the
//! server's `pg_stat_archiver` into a [`Snapshot`] of plain values; [`render`] turns a snapshot
//! into the text exposition format; the daemon adds its own job counters to the snapshot.
//!
//! The alert rules live here, beside the metrics they read, so that docs/, `pgvault deploy` and
//! the `promtool` tests all use the one file.

pub mod collect;
pub mod render;

use chrono::{DateTime, Utc};

use crate::verify::record::VerifyRecord;

pub use collect::{backup_max_age, backup_max_ages, collect};
pub use render::render;

/// Where `pgvault schedule` serves `/metrics` when `[metrics] listen` is set without a port
/// (clashes with neither postgres_exporter's 9187 nor pgbackrest_exporter's 9854).
pub const DEFAULT_PORT: u16 = 9856;

/// The Prometheus alert rules for pgvault's metrics (a rule file for `rule_files:`).
pub const ALERT_RULES: &str = include_str!("alert_rules.yml");

/// The `promtool test rules` unit tests of [`ALERT_RULES`] (expects the rules as `alert_rules.yml`).
pub const ALERT_RULES_TEST: &str = include_str!("alert_rules_test.yml");

/// The newest successful backup of one type.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupMetric {
    /// `full` (the `type` label).
    pub kind: String,
    pub stop_time: DateTime<Utc>,
    pub duration_seconds: f64,
    pub size_bytes: u64,
    pub stored_bytes: u64,
    /// Backups of this type in the repository.
    pub count: usize,
}

/// The newest archived WAL segment.
#[derive(Clone, Debug, PartialEq)]
pub struct WalNewest {
    pub name: String,
    pub timeline: u32,
    pub segment_number: u64,
    /// The LSN just past the segment's end, in bytes.
    pub end_lsn: u64,
    /// When the store received it.
    pub stored_at: DateTime<Utc>,
}

/// The last drill.
#[derive(Clone, Debug, PartialEq)]
pub struct DrillMetric {
    pub started_at: DateTime<Utc>,
    pub passed: bool,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
}

/// `pg_stat_archiver`, as read when the server could be reached.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArchiverMetric {
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
}

/// The daemon's record of one job kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobMetric {
    /// `backup`, `backup_diff`, `backup_incr`, `expire`, `verify`, `drill` (the `kind` label).
    pub job: String,
    pub runs: u64,
    pub failures: u64,
    /// Slots not run: skipped while the job ran, or the repository lock was held.
    pub skipped: u64,
    pub last_end: Option<DateTime<Utc>>,
    pub last_duration_seconds: Option<f64>,
    pub last_success: Option<bool>,
    pub next_run: Option<DateTime<Utc>>,
}

/// Everything the metrics report, as plain values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub collected_at: DateTime<Utc>,
    pub collect_seconds: f64,
    /// Whether the repository could be read (the repository metrics are absent when not).
    pub repository_up: bool,
    pub backups: Vec<BackupMetric>,
    pub backup_bytes: u64,
    pub wal_bytes: u64,
    pub wal_segments: usize,
    pub wal_newest: Option<WalNewest>,
    /// The recoverable window on the newest timeline: from, and to (when its end time is known).
    pub window: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    pub verify: Option<VerifyRecord>,
    pub drill: Option<DrillMetric>,
    /// `None`: the server was not asked (no connection); `Some(Err)`: asked and unreachable.
    pub archiver: Option<Result<ArchiverMetric, String>>,
    /// WAL the asynchronous archiver dropped at `archive_push_queue_max` (async mode with a
    /// local data directory only; read from the spool's counter).
    pub wal_dropped: Option<crate::archive::dropped::DroppedStats>,
    pub objective_rpo_seconds: Option<f64>,
    pub objective_rto_seconds: Option<f64>,
    /// The age the newest backup of each scheduled type (`full`, `diff`, `incr`) may reach under
    /// `[schedule] backup`, `backup_diff`, `backup_incr` (longest interval plus grace).
    pub backup_max_age_seconds: Vec<(String, f64)>,
    pub jobs: Vec<JobMetric>,
}
