//! The sections that tune what pgvault does (compression, encryption, backup, restore, objectives,
//! drills, retention, archiving): plain data with their defaults, validated by `Config::validate`.

use std::path::PathBuf;

use serde::Deserialize;

/// `[compression]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// `zstd` (default) or `none`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// zstd level of backups, 1..=19 (default 3).
    #[serde(default = "default_level")]
    pub level: i32,
    /// zstd level of archived WAL, 1..=19 (default 1). `archive_command` is on PostgreSQL's hot
    /// path: an archiver slower than the writer fills `pg_wal`. Level 1 spends about 40% less
    /// CPU per segment than level 3 for about 2% more stored bytes (docs/BENCHMARKS.md).
    #[serde(default = "default_archive_level")]
    pub archive_level: i32,
    /// Compression threads for base backups; 0 = one per core.
    #[serde(default)]
    pub threads: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            algorithm: default_algorithm(),
            level: default_level(),
            archive_level: default_archive_level(),
            threads: 0,
        }
    }
}

/// `[encryption]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// File holding the repository passphrase (mode 0600). Or set `PGVAULT_PASSPHRASE`.
    pub passphrase_file: Option<PathBuf>,
    /// `aes-256-gcm` (default when a passphrase is given) or `none`. A remote repository without
    /// encryption needs `cipher = "none"` spelled out.
    pub cipher: Option<String>,
}

/// `[backup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Seconds `backup` waits for the archiver to store the WAL that makes the backup consistent.
    #[serde(default = "default_archive_wait")]
    pub archive_wait_timeout: u64,
    /// Store the backup's WAL inside it (self-contained) instead of relying on the archive.
    #[serde(default)]
    pub include_wal: bool,
    /// Target size of one stored bundle object, in MiB (files are split across bundles).
    #[serde(default = "default_bundle_mib")]
    pub bundle_size_mib: u64,
    /// Request a fast (immediate) checkpoint at backup start. Default true.
    #[serde(default = "default_true")]
    pub fast_checkpoint: bool,
    /// When an incremental backup cannot be taken: `"full"` (take a full one, logged) or `"fail"`.
    #[serde(default)]
    pub incremental_fallback: crate::backup::incremental::IncrementalFallback,
    /// Parts (5 MiB each) of one bundle's upload sent at once (1..=16). Each costs 5 MiB of
    /// memory per uploading bundle; more help a store far away (see docs/CONFIGURATION.md).
    #[serde(default = "default_upload_parallel")]
    pub upload_parallel: usize,
}

impl BackupConfig {
    /// The first key out of range, with why.
    pub fn check(&self) -> Option<(&'static str, String)> {
        if self.upload_parallel == 0 || self.upload_parallel > 16 {
            return Some(("backup.upload_parallel", "must be between 1 and 16".to_string()));
        }
        None
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            archive_wait_timeout: default_archive_wait(),
            include_wal: false,
            bundle_size_mib: default_bundle_mib(),
            fast_checkpoint: true,
            incremental_fallback: Default::default(),
            upload_parallel: default_upload_parallel(),
        }
    }
}

/// `[restore]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Bundles downloaded and unpacked at once.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Path of `pgvault-archive` written into `restore_command`; default: the one installed
    /// beside `pgvault`.
    pub archive_command_path: Option<PathBuf>,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            parallel: default_parallel(),
            archive_command_path: None,
        }
    }
}

/// `[objectives]`: the targets written into runbooks (PostgreSQL units, e.g. `"30min"`, `"5min"`).
/// A drill turns its measured RTO and RPO into a pass or a fail against them; absent means no
/// objective (the figure is reported, not judged).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectivesConfig {
    /// Recovery time objective: restore start to a promoted server accepting connections.
    pub rto: Option<String>,
    /// Recovery point objective: how old the last replayed transaction may be when recovery ends.
    pub rpo: Option<String>,
}

/// `[drill]`: restore drills (see docs/DRILLS.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// A folder of `*.sql` assertion files run against every drill's promoted server.
    pub assertions: Option<PathBuf>,
    /// Where sandboxes are made (default: the system temp dir).
    pub sandbox_parent: Option<PathBuf>,
    /// The PostgreSQL bin directory (default: found from the backup's major version).
    pub pg_bin: Option<PathBuf>,
    /// How long recovery may take before the drill gives up (default `"1h"`).
    pub recovery_timeout: Option<String>,
    /// Databases amcheck covers (default: every database that allows connections).
    pub amcheck_databases: Option<Vec<String>>,
}

/// `[retention]`: what `pgvault expire` keeps (see docs/RETENTION.md). Every key is optional;
/// the policies combine (a backup is kept when any of them keeps it).
///
/// This is the one description of the retention keys: `expire`'s flags fill the same struct
/// (`retention::PolicyOverrides` is this type) and [`RetentionConfig::merge`] lays them over the
/// file's section; `retention::Policy::resolve` parses the result. A new key is added here (and
/// in `merge`, next to it) and to the parsed `Policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the newest N full backups, with continuous WAL from the oldest of them.
    pub keep_full: Option<u32>,
    /// Every point in this span before now stays restorable (PostgreSQL units: `"30d"`, `"36h"`).
    pub recovery_window: Option<String>,
    /// Keep the newest backup of each of the last N days (and weeks, months, years), each with
    /// only its own start-to-stop WAL.
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Objects that belong to no backup and no kept WAL are removed only once older than this
    /// (default `"24h"`); younger ones are reported.
    pub orphan_min_age: Option<String>,
}

impl RetentionConfig {
    /// Whether any key that keeps backups is set.
    pub fn has_policy(&self) -> bool {
        self.keep_full.is_some()
            || self.recovery_window.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
    }

    /// `self` with every key `over` sets replaced by `over`'s value (the per-run flags over the
    /// file's section).
    pub fn merge(&self, over: &RetentionConfig) -> RetentionConfig {
        let RetentionConfig {
            keep_full,
            recovery_window,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            orphan_min_age,
        } = over.clone();
        RetentionConfig {
            keep_full: keep_full.or(self.keep_full),
            recovery_window: recovery_window.or_else(|| self.recovery_window.clone()),
            keep_daily: keep_daily.or(self.keep_daily),
            keep_weekly: keep_weekly.or(self.keep_weekly),
            keep_monthly: keep_monthly.or(self.keep_monthly),
            keep_yearly: keep_yearly.or(self.keep_yearly),
            orphan_min_age: orphan_min_age.or_else(|| self.orphan_min_age.clone()),
        }
    }

    /// The first bad key of the file's section, with why (`retention.KEY`).
    pub(super) fn check(&self) -> Option<(&'static str, String)> {
        if self.keep_full == Some(0) {
            return Some((
                "retention.keep_full",
                "0 would keep no full backup; remove the key to not keep by count".into(),
            ));
        }
        for (key, v) in [
            ("retention.recovery_window", &self.recovery_window),
            ("retention.orphan_min_age", &self.orphan_min_age),
        ] {
            if let Some(Err(e)) = v.as_deref().map(crate::units::parse_duration) {
                return Some((key, e.to_string()));
            }
        }
        if let Some(w) = &self.recovery_window {
            if crate::units::parse_duration(w).is_ok_and(|d| d.is_zero()) {
                return Some((
                    "retention.recovery_window",
                    "0 promises no window; remove the key to not keep by window".into(),
                ));
            }
        }
        None
    }
}

/// `[archive]`: how `pgvault-archive` batches pushes and prefetches fetches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Segments one `push` stores: the one PostgreSQL asked for plus up to `push_batch - 1` more
    /// `.ready` ones after it (1: no batching).
    #[serde(default = "default_push_batch")]
    pub push_batch: usize,
    /// Segments of a batch compressed and stored at once.
    #[serde(default = "default_archive_parallel")]
    pub push_parallel: usize,
    /// Segments `fetch` downloads ahead into `pg_wal/.pgvault/prefetch` (0: no prefetch).
    #[serde(default = "default_get_prefetch")]
    pub get_prefetch: usize,
    /// Segments downloaded ahead at once.
    #[serde(default = "default_archive_parallel")]
    pub get_parallel: usize,
    // --- asynchronous push (issue 11 item 2); see crate::archive::async_mode ---
    /// `"sync"` (default): each `push` stores its segment itself. `"async"`: a background worker
    /// stores the `.ready` segments and `push` waits for (or spools) its segment.
    #[serde(default = "default_push_mode")]
    pub push_mode: String,
    /// In async mode, when `push` answers PostgreSQL: `"repository"` (default) once the segment
    /// is stored; `"spool"` once it is fsync'd in the local spool (a lost disk loses those).
    #[serde(default = "default_push_ack")]
    pub push_ack: String,
    /// The async spool directory; default `pg_wal/.pgvault/push` (never elsewhere in the data
    /// directory). Must be absolute.
    #[serde(default)]
    pub spool_path: Option<PathBuf>,
    /// A size (`4GB`): when un-archived WAL exceeds it, async `push` reports success WITHOUT
    /// storing the segment (recorded as a gap). Unset: never drop.
    #[serde(default)]
    pub archive_push_queue_max: Option<String>,
    /// A duration (`60s`): how long an async `push` waits for its segment to be stored.
    #[serde(default = "default_async_wait")]
    pub archive_async_wait: String,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            push_batch: default_push_batch(),
            push_parallel: default_archive_parallel(),
            get_prefetch: default_get_prefetch(),
            get_parallel: default_archive_parallel(),
            push_mode: default_push_mode(),
            push_ack: default_push_ack(),
            spool_path: None,
            archive_push_queue_max: None,
            archive_async_wait: default_async_wait(),
        }
    }
}

impl ArchiveConfig {
    /// The first key out of range, with why.
    pub(super) fn check(&self) -> Option<(&'static str, String)> {
        let bad = |k: &'static str, why: &str| Some((k, why.to_string()));
        if self.push_batch == 0 || self.push_batch > 256 {
            return bad("archive.push_batch", "must be between 1 and 256");
        }
        if self.push_parallel == 0 || self.push_parallel > 64 {
            return bad("archive.push_parallel", "must be between 1 and 64");
        }
        if self.get_prefetch > 256 {
            return bad("archive.get_prefetch", "must be between 0 and 256");
        }
        if self.get_parallel == 0 || self.get_parallel > 64 {
            return bad("archive.get_parallel", "must be between 1 and 64");
        }
        if !matches!(self.push_mode.as_str(), "sync" | "async") {
            return bad("archive.push_mode", "must be \"sync\" or \"async\"");
        }
        if !matches!(self.push_ack.as_str(), "repository" | "spool") {
            return bad("archive.push_ack", "must be \"repository\" or \"spool\"");
        }
        if self.spool_path.as_ref().is_some_and(|p| !p.is_absolute()) {
            return bad("archive.spool_path", "must be an absolute path");
        }
        if let Some(q) = &self.archive_push_queue_max {
            match crate::units::parse_size(q) {
                Err(e) => return Some(("archive.archive_push_queue_max", e.to_string())),
                Ok(0) => {
                    return bad(
                        "archive.archive_push_queue_max",
                        "0 would drop all WAL; remove the key for no limit",
                    )
                }
                Ok(_) => {}
            }
        }
        match crate::units::parse_duration(&self.archive_async_wait) {
            Err(e) => Some(("archive.archive_async_wait", e.to_string())),
            Ok(d) if d.is_zero() => bad("archive.archive_async_wait", "must be more than 0"),
            Ok(_) => None,
        }
    }

    /// Whether `push` runs asynchronously.
    pub fn is_async(&self) -> bool {
        self.push_mode == "async"
    }

    /// `archive_push_queue_max` in bytes (validated at load).
    pub fn queue_max_bytes(&self) -> Option<u64> {
        self.archive_push_queue_max
            .as_deref()
            .and_then(|q| crate::units::parse_size(q).ok())
    }

    /// `archive_async_wait` (validated at load).
    pub fn async_wait(&self) -> std::time::Duration {
        crate::units::parse_duration(&self.archive_async_wait).unwrap_or(std::time::Duration::from_secs(60))
    }
}

pub(super) fn default_push_mode() -> String {
    "sync".into()
}
pub(super) fn default_push_ack() -> String {
    "repository".into()
}
pub(super) fn default_async_wait() -> String {
    "60s".into()
}

pub(super) fn default_push_batch() -> usize {
    16
}
pub(super) fn default_get_prefetch() -> usize {
    8
}
pub(super) fn default_archive_parallel() -> usize {
    4
}

pub(super) fn default_algorithm() -> String {
    "zstd".into()
}
pub(super) fn default_level() -> i32 {
    3
}
pub(super) fn default_archive_level() -> i32 {
    1
}
pub(super) fn default_archive_wait() -> u64 {
    600
}
pub(super) fn default_upload_parallel() -> usize {
    1
}
pub(super) fn default_bundle_mib() -> u64 {
    128
}
pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_parallel() -> usize {
    4
}
