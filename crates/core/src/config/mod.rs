//! The configuration file shared by `pgvault` and `pgvault-archive`.
//!
//! One TOML file (`--config FILE`, else `$PGVAULT_CONFIG`, else `/etc/pgvault/pgvault.toml`)
//! describes the cluster, the repository, compression and encryption. Parsing is strict: an
//! unknown key or a missing value is an error that names the key and the file, because a typo in
//! a backup tool's configuration must never silently fall back to a default. Secrets may come from
//! the environment so that the file itself can stay world-readable; when the file (or a key file)
//! holds secrets it must not be readable by group or others.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

mod connection;
mod schedule;
mod sections;
#[cfg(test)]
mod tests;

pub use connection::{PostgresConfig, RepositoryConfig};
pub use schedule::{MetricsConfig, ScheduleConfig, DEFAULT_METRICS_REFRESH};
pub use sections::{
    ArchiveConfig, BackupConfig, CompressionConfig, DrillConfig, EncryptionConfig, ObjectivesConfig, RestoreConfig,
    RetentionConfig,
};

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
    /// `[schedule]`: the jobs `pgvault schedule` runs (cron expressions); absent runs nothing.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// `[metrics]`: where `pgvault schedule` serves Prometheus metrics; absent serves none.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The file this was read from (absolute), for messages and for the `restore_command` that a
    /// restore writes.
    #[serde(skip)]
    pub source: PathBuf,
    /// Problems worth telling the user about that do not stop the command (for example a
    /// world-readable file holding storage credentials). Binaries print them to stderr.
    #[serde(skip)]
    pub warnings: Vec<String>,
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
                let c = &self.compression;
                for (key, level) in [
                    ("compression.level", c.level),
                    ("compression.archive_level", c.archive_level),
                ] {
                    if !(1..=19).contains(&level) {
                        return Err(self.invalid(key, format!("{level} is outside 1..=19")));
                    }
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
        if let Some((key, why)) = self.backup.check() {
            return Err(self.invalid(key, why));
        }
        if let Some((key, why)) = self.retention.as_ref().and_then(RetentionConfig::check) {
            return Err(self.invalid(key, why));
        }
        if let Some((key, why)) = self.schedule.check().or_else(|| self.metrics.check()) {
            return Err(self.invalid(&key, why));
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
