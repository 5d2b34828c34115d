//! A pgvault repository: one cluster's base backups and WAL archive in one store.
//!
//! [`Repository`] ties the storage seam to the on-disk format: it reads the plaintext descriptor
//! (`pgvault.repo`), refuses a repository of another cluster or a newer format, unlocks the
//! repository key with the passphrase, and seals/opens every other object with it. Commands
//! (backup, archive, restore, list) only ever talk to the store through it.

pub mod catalog;
pub mod dirs;
pub mod gaps;
pub mod index;
pub mod layout;
pub mod lock;
pub mod meta;
pub mod objects;
pub mod reports;
pub mod state;
pub mod summary;
#[cfg(test)]
pub(crate) mod synthetic;
#[cfg(test)]
mod tests;
pub mod walk;

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;

use crate::config::{Config, ConfigError};
use crate::format::{self, Codec, Compression, FormatError, KdfParams, Keyring, MasterKey};
use crate::storage::{CreateMode, ObjectInfo, PutOutcome, Storage, StorageError};
use crate::wal::WalFileName;

pub use catalog::BackupCatalog;
pub use meta::{ClusterIdentity, RepoMeta};
pub use objects::{BackupListing, ObjectSealing, PushOutcome};

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{location}: {source}")]
    Object { location: String, source: FormatError },
    #[error("no pgvault repository at {location}: run `pgvault init` first (or check [repository] url)")]
    NotInitialized { location: String },
    #[error("{location}: the repository descriptor {key} is unreadable: {message}")]
    BadMeta {
        location: String,
        key: &'static str,
        message: String,
    },
    #[error("{location} is in repository format {found}, newer than this pgvault understands ({supported}): upgrade pgvault")]
    NewerFormat {
        location: String,
        found: u32,
        supported: u32,
    },
    #[error("{location} belongs to the cluster with system identifier {repository}, but the server is cluster {server}: point [repository] url at this cluster's repository")]
    ForeignCluster {
        location: String,
        repository: u64,
        server: u64,
    },
    #[error("{location} belongs to PostgreSQL {repository} with {repo_seg}-byte WAL segments, the server is PostgreSQL {server} with {server_seg}-byte segments: a new major version or segment size needs a new repository")]
    ClusterMismatch {
        location: String,
        repository: u32,
        server: u32,
        repo_seg: u64,
        server_seg: u64,
    },
    #[error(
        "{location} is encrypted: set [encryption] passphrase_file or the PGVAULT_PASSPHRASE environment variable"
    )]
    PassphraseRequired { location: String },
    #[error("{location} was created without encryption, but a passphrase is configured: remove it (or set [encryption] cipher = \"none\"), or use a new, encrypted repository")]
    UnexpectedPassphrase { location: String },
    #[error("{location} is not on this machine's disk and would be unencrypted: set [encryption] passphrase_file (recommended) or, to store backups in the clear on purpose, [encryption] cipher = \"none\"")]
    RemoteUnencrypted { location: String },
    #[error("{location}: {key}: {message}")]
    BadCatalog {
        location: String,
        key: String,
        message: String,
    },
    /// The backup index's summary of `id` did not match its catalog; the index was repaired, and
    /// a choice made from the old summary must be made again.
    #[error("{location}: the backup index disagreed with the catalog of backup '{id}' (the index was repaired): run the command again")]
    IndexDisagreed { location: String, id: String },
    #[error("{location}: no backup '{id}' (see `pgvault list`)")]
    BackupNotFound { location: String, id: String },
    #[error("{location}: {key} holds the catalog of backup '{found}', not of the backup it is stored under: it was moved or swapped; the backup cannot be trusted")]
    CatalogIdMismatch {
        location: String,
        key: String,
        found: String,
    },
    #[error("{name} is already archived in {location} with different content; nothing was overwritten. Two clusters may be archiving into one repository, or this cluster was restored without a new timeline: check archive_command on every server pointing at this repository")]
    WalDifferentContent { name: String, location: String },
}

/// An open repository (descriptor read, key unlocked).
pub struct Repository {
    storage: Storage,
    meta: RepoMeta,
    key: Option<Arc<MasterKey>>,
    codec: Codec,
    /// `[compression] archive_level`: [`Repository::wal_codec`] is `codec` at this level.
    wal_level: i32,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("storage", &self.storage)
            .field("encrypted", &self.key.is_some())
            .finish()
    }
}

/// Parses and checks a repository descriptor read from `location` (the one descriptor reader:
/// `open`, `init` and `copy` all use it). The descriptor is plaintext and unauthenticated, so
/// every field that sizes work later is bounded here.
pub fn parse_meta(location: &str, raw: &[u8]) -> Result<RepoMeta, RepositoryError> {
    let bad = |message: String| RepositoryError::BadMeta {
        location: location.to_string(),
        key: layout::META_KEY,
        message,
    };
    let value: serde_json::Value = serde_json::from_slice(raw).map_err(|e| bad(e.to_string()))?;
    if value.get("format").and_then(|v| v.as_str()) != Some(meta::FORMAT_NAME) {
        return Err(bad("not a pgvault repository descriptor".into()));
    }
    let version = value.get("format_version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version > u64::from(meta::FORMAT_VERSION) {
        return Err(RepositoryError::NewerFormat {
            location: location.to_string(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: meta::FORMAT_VERSION,
        });
    }
    let meta: RepoMeta = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if !meta::READABLE_VERSIONS.contains(&meta.format_version) {
        return Err(bad(format!("format_version {} does not exist", meta.format_version)));
    }
    meta.cluster.check_bounds().map_err(bad)?;
    if let Some(keyring) = &meta.encryption {
        keyring.check_params().map_err(|e| bad(e.to_string()))?;
    }
    Ok(meta)
}

async fn read_meta(storage: &Storage) -> Result<Option<RepoMeta>, RepositoryError> {
    let Some(raw) = storage.get_opt(layout::META_KEY).await? else {
        return Ok(None);
    };
    parse_meta(&storage.to_string(), &raw).map(Some)
}

impl Repository {
    /// Creates the repository for `cluster`, or, when it exists, checks that it is this
    /// cluster's and that the passphrase opens it. Returns whether it was created.
    pub async fn init(
        config: &Config,
        cluster: ClusterIdentity,
        kdf: Option<KdfParams>,
    ) -> Result<(Repository, bool), RepositoryError> {
        let mut storage = Storage::open(&config.repository, true)?;
        if read_meta(&storage).await?.is_none() {
            let passphrase = config.passphrase()?;
            let encryption = match &passphrase {
                Some(p) => {
                    let params = kdf.unwrap_or_default();
                    let (keyring, _key) = Keyring::create(p, params).map_err(|source| RepositoryError::Object {
                        location: storage.to_string(),
                        source,
                    })?;
                    Some(keyring)
                }
                None if storage.is_local() || config.encryption_disabled() => None,
                None => {
                    return Err(RepositoryError::RemoteUnencrypted {
                        location: storage.to_string(),
                    })
                }
            };
            // Probe once whether the store honours conditional create; WAL push relies on it.
            let create_mode = if config.repository.conditional_create {
                storage.probe_create_mode().await?
            } else {
                CreateMode::CheckThenWrite
            };
            if create_mode == CreateMode::CheckThenWrite {
                tracing::warn!(store = %storage, "the store does not honour conditional create: WAL push will check, then write");
            }
            storage.set_create_mode(create_mode);
            let meta = RepoMeta {
                format: meta::FORMAT_NAME.into(),
                format_version: meta::FORMAT_VERSION,
                repository_id: uuid::Uuid::new_v4().to_string(),
                created_at: Utc::now(),
                created_by: format!("pgvault {}", env!("CARGO_PKG_VERSION")),
                cluster: cluster.clone(),
                encryption,
                conditional_create: Some(create_mode == CreateMode::Conditional),
            };
            let body = serde_json::to_vec_pretty(&meta).map_err(|e| RepositoryError::BadMeta {
                location: storage.to_string(),
                key: layout::META_KEY,
                message: e.to_string(),
            })?;
            let created = storage.put_if_absent(layout::META_KEY, Bytes::from(body)).await? == PutOutcome::Created;
            let repo = Self::open_with(config, storage).await?;
            repo.check_cluster(&cluster)?;
            return Ok((repo, created));
        }
        let repo = Self::open_with(config, storage).await?;
        repo.check_cluster(&cluster)?;
        Ok((repo, false))
    }

    /// Opens an existing repository and unlocks its key.
    pub async fn open(config: &Config) -> Result<Repository, RepositoryError> {
        let storage = Storage::open(&config.repository, false)?;
        Self::open_with(config, storage).await
    }

    async fn open_with(config: &Config, mut storage: Storage) -> Result<Repository, RepositoryError> {
        let meta = read_meta(&storage)
            .await?
            .ok_or_else(|| RepositoryError::NotInitialized {
                location: storage.to_string(),
            })?;
        // Conditional create when init found the store honours it (local stores always do) and
        // the configuration does not turn it off; otherwise check-then-write.
        let honoured = meta.conditional_create.unwrap_or(storage.is_local());
        let mode = if honoured && config.repository.conditional_create {
            CreateMode::Conditional
        } else {
            CreateMode::CheckThenWrite
        };
        storage.set_create_mode(mode);
        let passphrase = config.passphrase()?;
        let key = match (&meta.encryption, passphrase) {
            (Some(keyring), Some(p)) => Some(Arc::new(keyring.unlock(&p).map_err(|source| {
                RepositoryError::Object {
                    location: storage.to_string(),
                    source,
                }
            })?)),
            (Some(_), None) => {
                return Err(RepositoryError::PassphraseRequired {
                    location: storage.to_string(),
                })
            }
            (None, Some(_)) => {
                return Err(RepositoryError::UnexpectedPassphrase {
                    location: storage.to_string(),
                })
            }
            (None, None) => None,
        };
        Ok(Repository {
            storage,
            meta,
            key,
            codec: Self::codec_for(config),
            wal_level: config.compression.archive_level,
        })
    }

    /// A repository over `storage` with default codecs, for tests that build their own
    /// descriptor instead of running `init`.
    #[cfg(test)]
    pub(crate) fn from_parts(storage: Storage, meta: RepoMeta, key: Option<Arc<MasterKey>>) -> Repository {
        Repository {
            storage,
            meta,
            key,
            codec: Codec::default(),
            wal_level: Codec::default().zstd_level,
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// How WAL push keeps from overwriting archived WAL on this repository's store.
    pub fn wal_push_mode(&self) -> CreateMode {
        self.storage.create_mode()
    }

    pub fn meta(&self) -> &RepoMeta {
        &self.meta
    }

    pub fn cluster(&self) -> &ClusterIdentity {
        &self.meta.cluster
    }

    pub fn is_encrypted(&self) -> bool {
        self.key.is_some()
    }

    pub fn key(&self) -> Option<&MasterKey> {
        self.key.as_deref()
    }

    pub fn shared_key(&self) -> Option<Arc<MasterKey>> {
        self.key.clone()
    }

    pub fn compression_name(&self) -> &'static str {
        match self.codec.compression {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec for new objects: zstd at the configured level on every core (a stream of backup
    /// bundles is split into jobs compressed in parallel). Archived WAL uses
    /// [`Repository::wal_codec`].
    pub fn codec(&self) -> Codec {
        self.codec.clone()
    }

    /// The codec [`Repository::codec`] will use, known from the configuration alone, so that
    /// work can start before the repository is open.
    pub fn codec_for(config: &Config) -> Codec {
        let c = &config.compression;
        let compression = if c.algorithm == "none" {
            Compression::None
        } else {
            Compression::Zstd
        };
        let zstd_workers = match c.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(2),
            n => n,
        };
        Codec {
            compression,
            zstd_level: c.level,
            zstd_workers,
            ..Codec::default()
        }
    }

    /// The codec for archived WAL: [`Repository::codec`] at `[compression] archive_level`.
    pub fn wal_codec(&self) -> Codec {
        Codec {
            zstd_level: self.wal_level,
            ..self.codec()
        }
    }

    /// The codec [`Repository::wal_codec`] will use, known from the configuration alone.
    pub fn wal_codec_for(config: &Config) -> Codec {
        Codec {
            zstd_level: config.compression.archive_level,
            ..Self::codec_for(config)
        }
    }

    /// Refuses a server that is not this repository's cluster.
    pub fn check_cluster(&self, server: &ClusterIdentity) -> Result<(), RepositoryError> {
        let repo = &self.meta.cluster;
        if repo.system_identifier != server.system_identifier {
            return Err(RepositoryError::ForeignCluster {
                location: self.storage.to_string(),
                repository: repo.system_identifier,
                server: server.system_identifier,
            });
        }
        if repo.major() != server.major() || repo.wal_segment_size != server.wal_segment_size {
            return Err(RepositoryError::ClusterMismatch {
                location: self.storage.to_string(),
                repository: repo.major(),
                server: server.major(),
                repo_seg: repo.wal_segment_size,
                server_seg: server.wal_segment_size,
            });
        }
        Ok(())
    }

    fn object_err(&self, key: &str, source: FormatError) -> RepositoryError {
        RepositoryError::Object {
            location: format!("{}/{}", self.storage, key),
            source,
        }
    }

    /// The object format version new objects are written in: 1 for a repository still in
    /// format 1 (until [`Repository::upgrade`]), 2 otherwise.
    pub fn object_version(&self) -> u8 {
        if self.meta.format_version >= 2 {
            2
        } else {
            1
        }
    }

    /// The identity a v2 object stored under `key` in this repository is bound to.
    pub fn identity<'a>(&'a self, key: &'a str) -> format::ObjectIdentity<'a> {
        format::ObjectIdentity::new(&self.meta.repository_id, key)
    }

    /// Everything needed to seal or open objects of this repository, owned (for blocking
    /// threads and tasks).
    pub fn sealing(&self) -> ObjectSealing {
        ObjectSealing {
            codec: self.codec(),
            key: self.key.clone(),
            repository_id: self.meta.repository_id.clone(),
            write_version: self.object_version(),
        }
    }

    /// Seals (compresses, encrypts) a small object in memory, to be stored under `key`.
    pub fn seal(&self, key: &str, data: &[u8]) -> Result<Vec<u8>, RepositoryError> {
        self.sealing()
            .seal(key, data, None, None)
            .map_err(|e| self.object_err(key, e))
    }

    /// Opens a small sealed object read from `key` (either object version; a v2 object must
    /// have been stored under `key` in this repository).
    pub fn unseal(&self, key: &str, data: &[u8]) -> Result<Vec<u8>, RepositoryError> {
        format::open_object(data, self.key(), Some(self.identity(key)))
            .map(|o| o.data)
            .map_err(|e| self.object_err(key, e))
    }

    /// Rewrites the descriptor to format version 2, so that new objects are identity-bound.
    /// Objects written before stay version 1 and readable; nothing else changes. Returns
    /// whether the descriptor changed (false: already version 2).
    pub async fn upgrade(&mut self) -> Result<bool, RepositoryError> {
        if self.meta.format_version >= meta::FORMAT_VERSION {
            return Ok(false);
        }
        let mut next = self.meta.clone();
        next.format_version = meta::FORMAT_VERSION;
        let body = serde_json::to_vec_pretty(&next).map_err(|e| RepositoryError::BadMeta {
            location: self.storage.to_string(),
            key: layout::META_KEY,
            message: e.to_string(),
        })?;
        self.storage.put(layout::META_KEY, Bytes::from(body)).await?;
        self.meta = next;
        Ok(true)
    }

    /// Reads and opens a small sealed object.
    pub async fn get_sealed(&self, key: &str) -> Result<Vec<u8>, RepositoryError> {
        let raw = self.storage.get(key).await?;
        self.unseal(key, &raw)
    }

    /// Seals and stores a small object, replacing any previous one.
    pub async fn put_sealed(&self, key: &str, data: &[u8]) -> Result<u64, RepositoryError> {
        let sealed = self.seal(key, data)?;
        let n = sealed.len() as u64;
        self.storage.put(key, Bytes::from(sealed)).await?;
        Ok(n)
    }

    /// Reads one backup's catalog.
    pub async fn load_catalog(&self, id: &str) -> Result<BackupCatalog, RepositoryError> {
        if !catalog::is_backup_id(id) {
            return Err(RepositoryError::BackupNotFound {
                location: self.storage.to_string(),
                id: id.to_string(),
            });
        }
        let key = layout::catalog_key(id);
        let raw = match self.get_sealed(&key).await {
            Err(RepositoryError::Storage(e)) if e.is_not_found() => {
                return Err(RepositoryError::BackupNotFound {
                    location: self.storage.to_string(),
                    id: id.to_string(),
                })
            }
            other => other?,
        };
        let cat: BackupCatalog = serde_json::from_slice(&raw).map_err(|e| RepositoryError::BadCatalog {
            location: self.storage.to_string(),
            key: key.clone(),
            message: format!("not a valid catalog: {e}"),
        })?;
        if cat.catalog_version > catalog::CATALOG_VERSION_INCREMENTAL {
            return Err(RepositoryError::BadCatalog {
                location: self.storage.to_string(),
                key,
                message: format!(
                    "catalog version {} is newer than this pgvault reads (up to {}): upgrade pgvault",
                    cat.catalog_version,
                    catalog::CATALOG_VERSION_INCREMENTAL
                ),
            });
        }
        if cat.id != id {
            return Err(RepositoryError::CatalogIdMismatch {
                location: self.storage.to_string(),
                key,
                found: cat.id,
            });
        }
        Ok(cat)
    }

    /// Every complete backup (one whose catalog is stored), oldest first, and the backups
    /// whose catalog cannot be read (each blocks only itself).
    pub async fn backup_listing(&self) -> Result<BackupListing, RepositoryError> {
        let mut ids: Vec<String> = self
            .storage
            .list_dirs(layout::BACKUPS_PREFIX)
            .await?
            .into_iter()
            .filter(|id| catalog::is_backup_id(id))
            .collect();
        ids.sort();
        let mut out = BackupListing::default();
        for id in ids {
            match self.load_catalog(&id).await {
                Ok(c) => out.backups.push(c),
                // A backup directory without a catalog is an unfinished (or failed) backup.
                Err(RepositoryError::BackupNotFound { .. }) => continue,
                // The store itself failing is not one catalog's problem.
                Err(e @ RepositoryError::Storage(_)) => return Err(e),
                Err(e) => out.unreadable.push((id, e)),
            }
        }
        Ok(out)
    }

    /// The readable complete backups, oldest first; unreadable catalogs are logged and
    /// skipped (see [`Repository::backup_listing`] to report them).
    pub async fn list_backups(&self) -> Result<Vec<BackupCatalog>, RepositoryError> {
        let listing = self.backup_listing().await?;
        for (id, e) in &listing.unreadable {
            tracing::warn!(backup = %id, "skipping a backup whose catalog cannot be read: {e}");
        }
        Ok(listing.backups)
    }

    /// Takes the repository lock `name` (see [`lock`]) for `command`, with a lease of `ttl`.
    pub async fn lock(
        &self,
        name: &str,
        ttl: std::time::Duration,
        command: &str,
    ) -> Result<lock::LockGuard, lock::LockError> {
        lock::RepoLock::acquire(&self.storage, name, ttl, command).await
    }

    /// Every archived WAL file, sorted by name.
    pub async fn list_wal(&self) -> Result<Vec<(WalFileName, ObjectInfo)>, RepositoryError> {
        let mut out: Vec<(WalFileName, ObjectInfo)> = self
            .storage
            .list(layout::WAL_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| layout::wal_name_of_key(&o.key).map(|n| (n, o)))
            .collect();
        out.sort_by_key(|a| a.0.to_string());
        Ok(out)
    }
}
