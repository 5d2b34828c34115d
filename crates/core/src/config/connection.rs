//! `[postgres]` and `[repository]`: how pgvault reaches the cluster and the store (the sections
//! holding connection settings and credentials).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::sections::default_true;

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

pub(super) fn default_request_timeout() -> u64 {
    60
}
pub(super) fn default_store_connect_timeout() -> u64 {
    10
}
pub(super) fn default_retry_max() -> usize {
    10
}
pub(super) fn default_retry_timeout() -> u64 {
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

pub(super) fn default_host() -> String {
    "/var/run/postgresql".into()
}
pub(super) fn default_port() -> u16 {
    5432
}
pub(super) fn default_user() -> String {
    "postgres".into()
}
pub(super) fn default_dbname() -> String {
    "postgres".into()
}
pub(super) fn default_sslmode() -> String {
    "prefer".into()
}
pub(super) fn default_connect_timeout() -> u64 {
    30
}
