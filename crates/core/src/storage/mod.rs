//! The storage seam: every byte pgvault keeps goes through [`Storage`].
//!
//! Behind it sits an `object_store::ObjectStore`: the durable local filesystem, or S3, GCS and
//! Azure Blob storage ([`cloud`]). The rest of pgvault speaks only in repository-relative keys (`wal/…`,
//! `backups/…`) and in four operations that every backend can honour: atomic put, put-if-absent,
//! streamed get, list. Errors are turned here into a [`StorageErrorKind`] callers decide by and a
//! message that names the store, the key, the operation and what to check.

pub mod cloud;
#[cfg(test)]
pub mod counting;
mod error;
#[cfg(test)]
mod faulty;
pub mod local;
mod retry;
mod stream;
mod tls;

use error::{bounded, classify, error_text, http_status, names_missing_bucket};
pub use error::{Backend, OperationError, StorageError, StorageErrorKind};
pub use retry::OP_RETRIES;
use stream::{body_backoff, BODY_RETRIES};
pub use stream::{Upload, UPLOAD_CONCURRENCY, UPLOAD_MEMORY, UPLOAD_PART_SIZE};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::config::RepositoryConfig;

/// What `put_if_absent` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    AlreadyExists,
}

/// One listed object.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// Repository-relative key.
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// A repository's store, addressed by repository-relative keys.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<dyn ObjectStore>,
    /// Human-readable location (`file:///var/lib/pgvault`, `s3://bucket/prefix`) for messages.
    display: String,
    /// Key prefix inside the store (empty for local stores rooted at the repository).
    prefix: String,
    local_root: Option<PathBuf>,
    /// The parsed URL of a cloud store (`None` for local and wrapped stores).
    cloud: Option<cloud::CloudUrl>,
    /// The `[repository] endpoint`, for messages.
    endpoint: Option<String>,
    /// Whether `put_if_absent` may rely on the store's conditional create; otherwise it checks
    /// first and then writes.
    conditional_create: bool,
}

/// How `put_if_absent` (and so WAL push) keeps from overwriting an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    /// The store's own conditional create (`If-None-Match: *`, a hard link on local disk).
    Conditional,
    /// Look first, write when absent, compare content when present (stores that ignore
    /// conditional create; a race between two pushers of the same name is not excluded).
    CheckThenWrite,
}

impl CreateMode {
    /// The short name `pgvault info` shows.
    pub fn name(self) -> &'static str {
        match self {
            CreateMode::Conditional => "conditional-create",
            CreateMode::CheckThenWrite => "check-then-write",
        }
    }

    /// A one-line explanation for `pgvault info`.
    pub fn description(self) -> &'static str {
        match self {
            CreateMode::Conditional => "conditional-create (atomic create-if-absent, never overwrites)",
            CreateMode::CheckThenWrite => {
                "check-then-write (the store does not honour conditional create: look, then write, compare content on conflict)"
            }
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage").field("location", &self.display).finish()
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl Storage {
    /// Opens the repository store named by `[repository] url`. `create` makes a missing local
    /// directory (for `init`); otherwise a missing repository is an error.
    pub fn open(cfg: &RepositoryConfig, create: bool) -> Result<Storage, StorageError> {
        let url = cfg.url.trim();
        let bad = |message: String| StorageError::BadUrl {
            url: url.to_string(),
            message,
        };
        let local_path = if let Some(rest) = url.strip_prefix("file://") {
            Some(PathBuf::from(rest))
        } else if url.starts_with('/') {
            Some(PathBuf::from(url))
        } else {
            None
        };
        if let Some(path) = local_path {
            if !path.is_absolute() {
                return Err(bad(
                    "a local repository needs an absolute path, e.g. file:///var/lib/pgvault".into(),
                ));
            }
            if !create && !path.is_dir() {
                return Err(bad(format!(
                    "directory {} does not exist: run `pgvault init` first, or fix the url",
                    path.display()
                )));
            }
            let store = local::DurableLocal::new(&path, create).map_err(|e| {
                bad(format!(
                    "cannot open directory {}: {e} (check that it exists and that this user may write to it)",
                    path.display()
                ))
            })?;
            let display = store.to_string();
            let root = store.root().to_path_buf();
            return Ok(Storage {
                inner: Arc::new(store),
                display,
                prefix: String::new(),
                local_root: Some(root),
                cloud: None,
                endpoint: None,
                conditional_create: true,
            });
        }
        let parsed = cloud::CloudUrl::parse(url).map_err(bad)?;
        let store = cloud::build(cfg, &parsed).map_err(bad)?;
        let mut storage = Storage::from_store(store, parsed.display(), parsed.prefix.clone());
        storage.endpoint = cfg.endpoint.clone();
        storage.conditional_create = cfg.conditional_create;
        storage.cloud = Some(parsed);
        Ok(storage)
    }

    /// Wraps an already-built store (tests, and the cloud backends).
    pub fn from_store(inner: Arc<dyn ObjectStore>, display: String, prefix: String) -> Storage {
        Storage {
            inner,
            display,
            prefix: prefix.trim_matches('/').to_string(),
            local_root: None,
            cloud: None,
            endpoint: None,
            conditional_create: true,
        }
    }

    /// A store in this process's memory (object_store's `InMemory`, conditional create honoured),
    /// empty on creation and gone when the last clone is dropped. For unit tests of logic only:
    /// it says nothing about how a real store behaves under faults, latency or concurrency.
    pub fn memory() -> Storage {
        Storage::from_store(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://".into(),
            String::new(),
        )
    }

    /// How `put_if_absent` protects existing objects.
    pub fn create_mode(&self) -> CreateMode {
        if self.conditional_create {
            CreateMode::Conditional
        } else {
            CreateMode::CheckThenWrite
        }
    }

    /// Sets how `put_if_absent` protects existing objects (from the repository descriptor).
    pub fn set_create_mode(&mut self, mode: CreateMode) {
        self.conditional_create = mode == CreateMode::Conditional;
    }

    /// Finds out whether the store honours conditional create: creates a probe object twice
    /// with `If-None-Match: *` (or the store's equivalent); the second attempt must be refused.
    /// Stores that reject the header, or that silently overwrite, get [`CreateMode::CheckThenWrite`].
    pub async fn probe_create_mode(&self) -> Result<CreateMode, StorageError> {
        if self.is_local() {
            return Ok(CreateMode::Conditional);
        }
        let key = format!("pgvault.probe-{}", uuid::Uuid::new_v4());
        let path = self.path(&key);
        let opts = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let first = self.inner.put_opts(&path, PutPayload::from_static(b"1"), opts()).await;
        let mode = match first {
            Ok(_) => match self.inner.put_opts(&path, PutPayload::from_static(b"2"), opts()).await {
                Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => {
                    CreateMode::Conditional
                }
                Ok(_) => CreateMode::CheckThenWrite,
                Err(object_store::Error::NotImplemented | object_store::Error::NotSupported { .. }) => {
                    CreateMode::CheckThenWrite
                }
                Err(e) => {
                    let _ = self.inner.delete(&path).await;
                    return Err(self.err("probe conditional create with", &key, e));
                }
            },
            Err(object_store::Error::NotImplemented | object_store::Error::NotSupported { .. }) => {
                CreateMode::CheckThenWrite
            }
            Err(e) if http_status(&e.to_string()).is_some_and(|s| s == 400 || s == 501) => CreateMode::CheckThenWrite,
            Err(e) => return Err(self.err("probe conditional create with", &key, e)),
        };
        if let Err(e) = self.inner.delete(&path).await {
            tracing::warn!(key = %key, "cannot delete the probe object: {e}");
        }
        Ok(mode)
    }

    /// Whether the repository lives on this machine's disk (and may be left unencrypted).
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{}", self.prefix, key))
        }
    }

    fn key_of(&self, path: &Path) -> String {
        let s = path.as_ref();
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&self.prefix)
                .unwrap_or(s)
                .trim_start_matches('/')
                .to_string()
        }
    }

    fn err(&self, op: &'static str, key: &str, e: object_store::Error) -> StorageError {
        // A 404 on a write, or one whose body names the bucket, means the bucket (container) is
        // missing, not the object: say so instead of "object does not exist".
        let text = error_text(&e);
        let is_not_found = matches!(e, object_store::Error::NotFound { .. });
        let missing_bucket = is_not_found
            && self.cloud.is_some()
            && (!matches!(op, "read" | "look up" | "delete") || names_missing_bucket(&text));
        if is_not_found && !missing_bucket {
            return StorageError::NotFound {
                store: self.display.clone(),
                key: key.to_string(),
            };
        }
        let detail = bounded(&text);
        let status = http_status(&detail).or(missing_bucket.then_some(404));
        let kind = classify(&e, op, status, missing_bucket);
        let backend = match &self.cloud {
            Some(cloud) => Backend::Cloud {
                bucket_word: cloud.kind.bucket_word(),
                bucket: cloud.bucket.clone(),
                object: self.path(key).to_string(),
                endpoint: self.endpoint.clone(),
            },
            None if self.is_local() => Backend::Local,
            None => Backend::Other,
        };
        let status = if self.cloud.is_some() { status } else { None };
        OperationError {
            kind,
            store: self.display.clone(),
            op,
            key: key.to_string(),
            status,
            detail,
            backend,
        }
        .into()
    }

    /// Reads a whole (small) object, `None` when it does not exist.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Streams an object. A request that fails transiently is tried again; when the body is cut off, the rest is requested again from the
    /// offset reached (pinned to the same object version by its ETag where the store gives one),
    /// a bounded number of times, so a dropped connection does not fail a restore.
    pub async fn get_stream(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let path = self.path(key);
        let r = self
            .retrying("read", key, |_| async {
                self.inner.get(&path).await.map_err(|e| self.err("read", key, e))
            })
            .await?;
        let state = stream::ResumableRead {
            storage: self.clone(),
            key: key.to_string(),
            path,
            e_tag: r.meta.e_tag.clone(),
            size: r.meta.size,
            offset: 0,
            attempts: 0,
            body: Some(r.into_stream()),
        };
        Ok(state.into_stream())
    }

    /// Size and time of an object, `None` when it does not exist.
    /// Transient failures are tried again (bounded).
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let path = self.path(key);
        self.retrying("look up", key, |_| async {
            match self.inner.head(&path).await {
                Ok(m) => Ok(Some(ObjectInfo {
                    key: key.to_string(),
                    size: m.size,
                    last_modified: m.last_modified,
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("look up", key, e)),
            }
        })
        .await
    }

    /// Every object under `prefix` (recursively), in no particular order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let p = self.path(prefix.trim_end_matches('/'));
        let mut attempt = 0;
        'again: loop {
            let mut out = Vec::new();
            let mut s = self.inner.list(Some(&p));
            while let Some(m) = s.next().await {
                match m {
                    Ok(m) => out.push(ObjectInfo {
                        key: self.key_of(&m.location),
                        size: m.size,
                        last_modified: m.last_modified,
                    }),
                    Err(e @ object_store::Error::NotFound { .. }) if !names_missing_bucket(&error_text(&e)) => break,
                    // A listing page cut off mid-body is not retried by object_store: list again.
                    Err(e) => match self.err("list", prefix, e) {
                        e if attempt < BODY_RETRIES && e.kind().is_unavailable() => {
                            attempt += 1;
                            tracing::warn!(prefix, attempt, "listing {prefix} failed ({e}); listing again");
                            tokio::time::sleep(body_backoff(attempt)).await;
                            continue 'again;
                        }
                        e => return Err(e),
                    },
                }
            }
            return Ok(out);
        }
    }

    /// The immediate "sub-directories" under `prefix`.
    /// A listing cut off mid-body, or failing transiently, is listed again (bounded).
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let p = self.path(prefix.trim_end_matches('/'));
        self.retrying("list", prefix, |_| async {
            match self.inner.list_with_delimiter(Some(&p)).await {
                Ok(r) => Ok(r
                    .common_prefixes
                    .iter()
                    .filter_map(|c| c.filename().map(|s| s.to_string()))
                    .collect()),
                Err(e @ object_store::Error::NotFound { .. }) if !names_missing_bucket(&error_text(&e)) => {
                    Ok(Vec::new())
                }
                Err(e) => Err(self.err("list", prefix, e)),
            }
        })
        .await
    }

    /// Deletes `key`; an object already gone is not an error, so a retried delete is safe.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key);
        self.retrying("delete", key, |_| async {
            match self.inner.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err("delete", key, e)),
            }
        })
        .await
    }

    /// Starts a streamed upload; nothing appears under `key` until [`Upload::finish`] succeeds.
    pub async fn upload(&self, key: &str) -> Result<Upload, StorageError> {
        let up = self
            .inner
            .put_multipart(&self.path(key))
            .await
            .map_err(|e| self.err("start upload of", key, e))?;
        Ok(Upload::new(self.clone(), key, up))
    }
}

#[cfg(test)]
mod memory_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_is_explained() {
        let cfg = crate::config::RepositoryConfig::for_url("ftp://x/y");
        let err = Storage::open(&cfg, false).unwrap_err().to_string();
        assert!(err.contains("unknown scheme"), "{err}");
        let cfg = crate::config::RepositoryConfig::for_url("s3://");
        let err = Storage::open(&cfg, false).unwrap_err().to_string();
        assert!(
            err.contains("repository URL 's3://'") && err.contains("no bucket"),
            "{err}"
        );
    }
}
