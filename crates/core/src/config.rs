//! The configuration file shared by `pgvault` and `pgvault-archive`.
//!
//! One TOML file (`--config FILE`, else `$PGVAULT_CONFIG`, else `/etc/pgvault/pgvault.toml`)
//! describes the cluster, the repository, compression and encryption. Parsing is strict: an
//! unknown key or a missing value is an error that names the key and the file, because a typo in
//! a backup tool's configuration must never silently fall back to a default. Secrets may come from
//! the environment so that the file itself can stay world-readable; when the file (or a key file)
//! holds secrets it must not be readable by group or others.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

/// Where the configuration is looked for when neither `--config` nor `$PGVAULT_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pgvault/pgvault.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "PGVAULT_CONFIG";
/// Environment variable carrying the repository passphrase.
pub const PASSPHRASE_ENV: &str = "PGVAULT_PASSPHRASE";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source} (give the file with --config or {CONFIG_ENV})")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration file {path}: key {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "{what} {path} is readable by group or others (mode {mode:o}); it holds secrets: run `chmod 600 {path}`{hint}"
    )]
    LoosePermissions {
        what: &'static str,
        path: PathBuf,
        mode: u32,
        hint: &'static str,
    },
    #[error("cannot read {what} {path}: {source}")]
    ReadSecret {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is empty")]
    EmptySecret { what: &'static str, path: PathBuf },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub postgres: PostgresConfig,
    pub repository: RepositoryConfig,
    #[serde(default)]
    pub compression: CompressionConfig,
    #[serde(default)]
    pub encryption: EncryptionConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub restore: RestoreConfig,
    /// `[retention]`; absent means no policy (`expire` then deletes nothing).
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// `[objectives]`: the recovery time and point objectives drills (and alerts) measure against.
    #[serde(default)]
    pub objectives: ObjectivesConfig,
    /// `[drill]`: how `pgvault drill` runs.
    #[serde(default)]
    pub drill: DrillConfig,
    /// The file this was read from (absolute), for messages and for the `restore_command` that a
    /// restore writes.
    #[serde(skip)]
    pub source: PathBuf,
    /// Problems worth telling the user about that do not stop the command (for example a
    /// world-readable file holding storage credentials). Binaries print them to stderr.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `[postgres]`: how to reach the cluster being backed up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Host name, IP address, or the directory holding the Unix socket.
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_user")]
    pub user: String,
    /// Database for ordinary SQL (archiver status, restore points). Default `postgres`.
    #[serde(default = "default_dbname")]
    pub dbname: String,
    /// The cluster's data directory (where `pgvault-archive push` finds relative WAL paths).
    pub pgdata: Option<PathBuf>,
    /// A file holding the password (mode 0600). Otherwise `PGPASSWORD` or `~/.pgpass`.
    pub password_file: Option<PathBuf>,
    /// `disable`, `prefer` (default), `require`, `verify-ca` or `verify-full`.
    #[serde(default = "default_sslmode")]
    pub sslmode: String,
    /// CA bundle (PEM) for `verify-ca` and `verify-full`.
    pub sslrootcert: Option<PathBuf>,
    /// Seconds to wait for a connection. Default 30.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
}

/// `[repository]`: where backups and WAL are stored.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// `file:///path` (or a bare absolute path); `s3://`, `gs://`, `az://` are cloud stores.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// GCS: a service-account JSON key file (else `GOOGLE_SERVICE_ACCOUNT*` / ADC).
    pub service_account_file: Option<PathBuf>,
    /// Azure: the storage account name (else `AZURE_STORAGE_ACCOUNT_NAME`).
    pub account: Option<String>,
    /// Azure: the storage account key (else `AZURE_STORAGE_ACCOUNT_KEY`, a SAS or managed identity).
    pub access_key: Option<String>,
    /// Seconds one HTTP request may take in total (default 60).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: u64,
    /// Seconds to establish one connection (default 10).
    #[serde(default = "default_store_connect_timeout")]
    pub connect_timeout: u64,
    /// Retries of one failed request (5xx, 429, timeouts, resets); default 10.
    #[serde(default = "default_retry_max")]
    pub retry_max: usize,
    /// Seconds after which a request is not retried any more (default 180).
    #[serde(default = "default_retry_timeout")]
    pub retry_timeout: u64,
    /// Use the store's conditional create (`If-None-Match: *`) for WAL when `init` finds that the
    /// store honours it (default true); `false` forces check-then-write.
    #[serde(default = "default_true")]
    pub conditional_create: bool,
}

impl RepositoryConfig {
    /// A configuration for `url` with every other key at its default.
    pub fn for_url(url: impl Into<String>) -> RepositoryConfig {
        RepositoryConfig {
            url: url.into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            ca_file: None,
            allow_http: false,
            virtual_hosted_style: false,
            service_account_file: None,
            account: None,
            access_key: None,
            request_timeout: default_request_timeout(),
            connect_timeout: default_store_connect_timeout(),
            retry_max: default_retry_max(),
            retry_timeout: default_retry_timeout(),
            conditional_create: true,
        }
    }
}

fn default_request_timeout() -> u64 {
    60
}
fn default_store_connect_timeout() -> u64 {
    10
}
fn default_retry_max() -> usize {
    10
}
fn default_retry_timeout() -> u64 {
    180
}

impl fmt::Debug for RepositoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "**redacted**");
        f.debug_struct("RepositoryConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("ca_file", &self.ca_file)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("service_account_file", &self.service_account_file)
            .field("account", &self.account)
            .field("access_key", &redact(&self.access_key))
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry_max", &self.retry_max)
            .field("retry_timeout", &self.retry_timeout)
            .field("conditional_create", &self.conditional_create)
            .finish()
    }
}

/// `[compression]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// `zstd` (default) or `none`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// zstd level, 1..=19 (default 3).
    #[serde(default = "default_level")]
    pub level: i32,
    /// Compression threads for base backups; 0 = one per core.
    #[serde(default)]
    pub threads: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            algorithm: default_algorithm(),
            level: default_level(),
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
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            archive_wait_timeout: default_archive_wait(),
            include_wal: false,
            bundle_size_mib: default_bundle_mib(),
            fast_checkpoint: true,
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
#[derive(Debug, Clone, Default, Deserialize)]
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
    fn check(&self) -> Option<(&'static str, String)> {
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

fn default_push_mode() -> String {
    "sync".into()
}
fn default_push_ack() -> String {
    "repository".into()
}
fn default_async_wait() -> String {
    "60s".into()
}

fn default_push_batch() -> usize {
    16
}
fn default_get_prefetch() -> usize {
    8
}
fn default_archive_parallel() -> usize {
    4
}

fn default_host() -> String {
    "/var/run/postgresql".into()
}
fn default_port() -> u16 {
    5432
}
fn default_user() -> String {
    "postgres".into()
}
fn default_dbname() -> String {
    "postgres".into()
}
fn default_sslmode() -> String {
    "prefer".into()
}
fn default_connect_timeout() -> u64 {
    30
}
fn default_algorithm() -> String {
    "zstd".into()
}
fn default_level() -> i32 {
    3
}
fn default_archive_wait() -> u64 {
    600
}
fn default_bundle_mib() -> u64 {
    128
}
fn default_true() -> bool {
    true
}
fn default_parallel() -> usize {
    4
}

impl Config {
    /// The file to read: `--config`, else `$PGVAULT_CONFIG`, else the default path.
    pub fn locate(explicit: Option<&Path>) -> PathBuf {
        if let Some(p) = explicit {
            return p.to_path_buf();
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }

    /// Reads, parses and validates the configuration.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = Self::locate(explicit);
        let path = std::path::absolute(&path).unwrap_or(path);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let mut config = Self::parse(&text, &path)?;
        config.source = path;
        config.check_file_permissions()?;
        Ok(config)
    }

    /// Parses and validates configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut config = config;
        config.source = path.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // The connection code's own parser decides, so the two never disagree on what is supported.
        if let Err(e) = self.postgres.sslmode.parse::<crate::protocol::SslMode>() {
            return Err(self.invalid("postgres.sslmode", e.to_string()));
        }
        if self.repository.url.trim().is_empty() {
            return Err(self.invalid("repository.url", "is empty; e.g. file:///var/lib/pgvault"));
        }
        let r = &self.repository;
        if r.request_timeout == 0 || r.request_timeout > 3600 {
            return Err(self.invalid("repository.request_timeout", "must be between 1 and 3600 seconds"));
        }
        if r.connect_timeout == 0 || r.connect_timeout > 600 {
            return Err(self.invalid("repository.connect_timeout", "must be between 1 and 600 seconds"));
        }
        if r.retry_max > 100 {
            return Err(self.invalid("repository.retry_max", "must be at most 100"));
        }
        if r.retry_timeout == 0 || r.retry_timeout > 86400 {
            return Err(self.invalid("repository.retry_timeout", "must be between 1 and 86400 seconds"));
        }
        match self.compression.algorithm.as_str() {
            "zstd" => {
                if !(1..=19).contains(&self.compression.level) {
                    return Err(self.invalid(
                        "compression.level",
                        format!("{} is outside 1..=19", self.compression.level),
                    ));
                }
            }
            "none" => {}
            other => return Err(self.invalid("compression.algorithm", format!("'{other}' is not one of zstd, none"))),
        }
        match self.encryption.cipher.as_deref() {
            None | Some("aes-256-gcm") | Some("none") => {}
            Some(other) => {
                return Err(self.invalid(
                    "encryption.cipher",
                    format!("'{other}' is not one of aes-256-gcm, none"),
                ))
            }
        }
        if self.encryption.cipher.as_deref() == Some("none") && self.encryption.passphrase_file.is_some() {
            return Err(self.invalid(
                "encryption.passphrase_file",
                "is set while cipher = \"none\": remove one of them",
            ));
        }
        if self.backup.bundle_size_mib == 0 || self.backup.bundle_size_mib > 4096 {
            return Err(self.invalid("backup.bundle_size_mib", "must be between 1 and 4096"));
        }
        if self.restore.parallel == 0 || self.restore.parallel > 64 {
            return Err(self.invalid("restore.parallel", "must be between 1 and 64"));
        }
        if let Some((key, why)) = self.archive.check() {
            return Err(self.invalid(key, why));
        }
        if let Some(r) = &self.retention {
            self.validate_retention(r)?;
        }
        for (key, v) in [
            ("objectives.rto", &self.objectives.rto),
            ("objectives.rpo", &self.objectives.rpo),
            ("drill.recovery_timeout", &self.drill.recovery_timeout),
        ] {
            if let Some(v) = v {
                crate::units::parse_duration(v).map_err(|e| self.invalid(key, e.to_string()))?;
            }
        }
        Ok(())
    }

    fn validate_retention(&self, r: &RetentionConfig) -> Result<(), ConfigError> {
        if r.keep_full == Some(0) {
            return Err(self.invalid(
                "retention.keep_full",
                "0 would keep no full backup; remove the key to not keep by count",
            ));
        }
        for (key, v) in [
            ("retention.recovery_window", &r.recovery_window),
            ("retention.orphan_min_age", &r.orphan_min_age),
        ] {
            if let Some(v) = v {
                crate::units::parse_duration(v).map_err(|e| self.invalid(key, e.to_string()))?;
            }
        }
        if let Some(w) = &r.recovery_window {
            if crate::units::parse_duration(w).is_ok_and(|d| d.is_zero()) {
                return Err(self.invalid(
                    "retention.recovery_window",
                    "0 promises no window; remove the key to not keep by window",
                ));
            }
        }
        Ok(())
    }

    /// Storage credentials in the file itself should make it private. A loose mode is a warning,
    /// not a refusal: those credentials reach only ciphertext (the passphrase, which unlocks the
    /// data, has its own file and that one is refused when loose), and libpq treats a loose
    /// `.pgpass` the same way. The warning repeats on every run until the mode is fixed.
    fn check_file_permissions(&mut self) -> Result<(), ConfigError> {
        let holds_secrets = self.repository.secret_access_key.is_some()
            || self.repository.session_token.is_some()
            || self.repository.access_key.is_some();
        if holds_secrets {
            match check_private(
                &self.source,
                "configuration file",
                " (or move the secrets to environment variables)",
            ) {
                Ok(()) => {}
                Err(e @ ConfigError::LoosePermissions { .. }) => self.warnings.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the user asked for an unencrypted repository in so many words.
    pub fn encryption_disabled(&self) -> bool {
        self.encryption.cipher.as_deref() == Some("none")
    }

    /// The repository passphrase: `$PGVAULT_PASSPHRASE`, else `[encryption] passphrase_file`.
    /// `None` when neither is configured.
    pub fn passphrase(&self) -> Result<Option<Zeroizing<Vec<u8>>>, ConfigError> {
        if self.encryption_disabled() {
            return Ok(None);
        }
        if let Some(v) = std::env::var_os(PASSPHRASE_ENV) {
            if !v.is_empty() {
                use std::os::unix::ffi::OsStrExt;
                return Ok(Some(Zeroizing::new(v.as_bytes().to_vec())));
            }
        }
        let Some(path) = &self.encryption.passphrase_file else {
            return Ok(None);
        };
        let path = self.relative_to_config(path);
        check_private(&path, "passphrase file", "")?;
        let raw = std::fs::read(&path).map_err(|source| ConfigError::ReadSecret {
            what: "passphrase file",
            path: path.clone(),
            source,
        })?;
        let raw = Zeroizing::new(raw);
        // One trailing newline is how editors and `echo` leave files; it is not part of the secret.
        let mut end = raw.len();
        while end > 0 && (raw[end - 1] == b'\n' || raw[end - 1] == b'\r') {
            end -= 1;
        }
        if end == 0 {
            return Err(ConfigError::EmptySecret {
                what: "passphrase file",
                path,
            });
        }
        Ok(Some(Zeroizing::new(raw[..end].to_vec())))
    }

    /// Resolves a path from the file relative to the file's directory.
    pub fn relative_to_config(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.source
                .parent()
                .map(|d| d.join(p))
                .unwrap_or_else(|| p.to_path_buf())
        }
    }
}

/// Refuses a secret-bearing file that group or others may read.
pub fn check_private(path: &Path, what: &'static str, hint: &'static str) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::ReadSecret {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::LoosePermissions {
            what,
            path: path.to_path_buf(),
            mode,
            hint,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/pgvault/test.toml"))
    }

    const BENCH: &str = r#"
[postgres]
host = "/tmp/pgvault-bench"
port = 55432
user = "postgres"
pgdata = "/tmp/pgvault-bench/pg"

[repository]
url = "s3://pgvault/bench"
endpoint = "https://127.0.0.1:8443"
region = "us-east-1"
access_key_id = "benchkey"
secret_access_key = "benchsecret"
ca_file = "/tmp/pgvault-bench/tls/s3.crt"

[compression]
algorithm = "zstd"
level = 3

[encryption]
passphrase_file = "/tmp/pgvault-bench/passphrase"
"#;

    #[test]
    fn accepts_the_bench_bed_configuration() {
        let c = parse(BENCH).unwrap();
        assert_eq!(c.postgres.port, 55432);
        assert_eq!(c.repository.url, "s3://pgvault/bench");
        assert_eq!(c.compression.level, 3);
        assert!(
            !format!("{c:?}").contains("benchsecret"),
            "secrets must not reach Debug output"
        );
    }

    #[test]
    fn retention_section_is_checked() {
        let base = "[postgres]\n[repository]\nurl = \"file:///r\"\n";
        assert!(parse(base).unwrap().retention.is_none());
        let c = parse(&format!(
            "{base}[retention]\nkeep_full = 2\nrecovery_window = \"30d\"\nkeep_monthly = 12\norphan_min_age = \"6h\"\n"
        ))
        .unwrap();
        let r = c.retention.unwrap();
        assert_eq!(r.keep_full, Some(2));
        assert!(r.has_policy());
        assert!(!parse(&format!("{base}[retention]\n"))
            .unwrap()
            .retention
            .unwrap()
            .has_policy());
        for (bad, key) in [
            ("recovery_window = \"30\"", "retention.recovery_window"),
            ("recovery_window = \"30 days\"", "retention.recovery_window"),
            ("recovery_window = \"0d\"", "retention.recovery_window"),
            ("keep_full = 0", "retention.keep_full"),
            ("orphan_min_age = \"1x\"", "retention.orphan_min_age"),
            ("keep_dayly = 3", "keep_dayly"),
            ("keep_daily = -1", "keep_daily"),
        ] {
            let err = parse(&format!("{base}[retention]\n{bad}\n")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("test.toml"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = parse("[postgres]\nhots = \"x\"\n[repository]\nurl = \"file:///r\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/pgvault/test.toml"), "{msg}");
        assert!(msg.contains("hots"), "{msg}");
    }

    #[test]
    fn missing_value_names_key_and_file() {
        let err = parse("[postgres]\n[repository]\n").unwrap_err().to_string();
        assert!(err.contains("url") && err.contains("test.toml"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_the_key() {
        let base = "[postgres]\n[repository]\nurl = \"file:///r\"\n";
        let err = parse(&format!("{base}[compression]\nlevel = 40\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("compression.level"), "{err}");
        let err = parse(&format!("{base}[compression]\nalgorithm = \"lz5\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("compression.algorithm"), "{err}");
        let err = parse("[postgres]\nsslmode = \"maybe\"\n[repository]\nurl = \"file:///r\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres.sslmode"), "{err}");
    }

    #[test]
    fn every_sslmode_the_client_supports_is_accepted() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let text = format!("[postgres]\nsslmode = \"{mode}\"\n[repository]\nurl = \"file:///r\"\n");
            assert!(parse(&text).is_ok(), "sslmode {mode} refused");
        }
        let err = parse("[postgres]\nsslmode = \"allow\"\n[repository]\nurl = \"file:///r\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres.sslmode") && err.contains("prefer"), "{err}");
    }

    #[test]
    fn loose_passphrase_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "correct horse battery staple\n").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "[postgres]\n[repository]\nurl = \"file:///r\"\n[encryption]\npassphrase_file = \"{}\"\n",
            pass.display()
        );
        let c = parse(&text).unwrap();
        // The environment variable would take precedence; this test relies on it being unset.
        if std::env::var_os(PASSPHRASE_ENV).is_none() {
            assert!(matches!(c.passphrase(), Err(ConfigError::LoosePermissions { .. })));
            std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(&c.passphrase().unwrap().unwrap()[..], b"correct horse battery staple");
        }
    }

    #[test]
    fn world_readable_credentials_warn_but_load() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("pgvault.toml");
        std::fs::write(
            &cfg,
            "[postgres]\n[repository]\nurl = \"s3://b/p\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n[encryption]\ncipher = \"none\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = Config::load(Some(&cfg)).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("chmod 600"), "{:?}", c.warnings);
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Config::load(Some(&cfg)).unwrap().warnings.is_empty());
    }
}
