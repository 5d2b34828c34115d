//! The storage seam: every byte pgvault keeps goes through [`Storage`].
//!
//! Behind it sits an `object_store::ObjectStore`: the durable local filesystem now, S3, GCS and
//! Azure later. The rest of pgvault speaks only in repository-relative keys (`wal/…`,
//! `backups/…`) and in four operations that every backend can honour: atomic put, put-if-absent,
//! streamed get, list. Errors are turned here into messages that name the store, the key, the
//! operation and what to check.

pub mod local;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};

use crate::config::RepositoryConfig;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("repository URL '{url}': {message}")]
    BadUrl { url: String, message: String },
    #[error("{store}: cannot {op} '{key}': {message}{hint}")]
    Operation { store: String, op: &'static str, key: String, message: String, hint: String },
    #[error("{store}: object '{key}' does not exist")]
    NotFound { store: String, key: String },
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

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

/// How many parts of one streamed upload may be in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;
/// Size of one part of a streamed upload.
pub const UPLOAD_PART_SIZE: usize = 16 * 1024 * 1024;

impl Storage {
    /// Opens the repository store named by `[repository] url`. `create` makes a missing local
    /// directory (for `init`); otherwise a missing repository is an error.
    pub fn open(cfg: &RepositoryConfig, create: bool) -> Result<Storage, StorageError> {
        let url = cfg.url.trim();
        let bad = |message: String| StorageError::BadUrl { url: url.to_string(), message };
        let local_path = if let Some(rest) = url.strip_prefix("file://") {
            Some(PathBuf::from(rest))
        } else if url.starts_with('/') {
            Some(PathBuf::from(url))
        } else {
            None
        };
        if let Some(path) = local_path {
            if !path.is_absolute() {
                return Err(bad("a local repository needs an absolute path, e.g. file:///var/lib/pgvault".into()));
            }
            if !create && !path.is_dir() {
                return Err(bad(format!(
                    "directory {} does not exist: run `pgvault init` first, or fix the url",
                    path.display()
                )));
            }
            let store = local::DurableLocal::new(&path, create).map_err(|e| {
                bad(format!("cannot open directory {}: {e} (check that it exists and that this user may write to it)", path.display()))
            })?;
            let display = store.to_string();
            let root = store.root().to_path_buf();
            return Ok(Storage { inner: Arc::new(store), display, prefix: String::new(), local_root: Some(root) });
        }
        let scheme = url.split("://").next().unwrap_or("");
        match scheme {
            "s3" | "gs" | "az" => Err(bad(format!(
                "{scheme}:// repositories are not supported by this build yet; use file:///path"
            ))),
            _ => Err(bad("unknown scheme: use file:///path (s3://, gs://, az:// for cloud stores)".into())),
        }
    }

    /// Wraps an already-built store (tests, and the cloud backends).
    pub fn from_store(inner: Arc<dyn ObjectStore>, display: String, prefix: String) -> Storage {
        Storage { inner, display, prefix: prefix.trim_matches('/').to_string(), local_root: None }
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
            s.strip_prefix(&self.prefix).unwrap_or(s).trim_start_matches('/').to_string()
        }
    }

    fn err(&self, op: &'static str, key: &str, e: object_store::Error) -> StorageError {
        if let object_store::Error::NotFound { .. } = e {
            return StorageError::NotFound { store: self.display.clone(), key: key.to_string() };
        }
        let hint = if self.is_local() {
            " (check free space, permissions and that the repository is owned by the user running pgvault)"
        } else {
            " (check the endpoint, credentials and network)"
        };
        StorageError::Operation {
            store: self.display.clone(),
            op,
            key: key.to_string(),
            message: e.to_string(),
            hint: hint.to_string(),
        }
    }

    /// Stores `data` under `key`, atomically replacing any previous object.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner
            .put(&self.path(key), PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(|e| self.err("write", key, e))
    }

    /// Stores `data` under `key` unless an object is already there; never overwrites.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome, StorageError> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.inner.put_opts(&self.path(key), PutPayload::from(data), opts).await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.err("write", key, e)),
        }
    }

    /// Reads a whole (small) object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let r = self.inner.get(&self.path(key)).await.map_err(|e| self.err("read", key, e))?;
        r.bytes().await.map_err(|e| self.err("read", key, e))
    }

    /// Reads a whole (small) object, `None` when it does not exist.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Streams an object.
    pub async fn get_stream(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let r = self.inner.get(&self.path(key)).await.map_err(|e| self.err("read", key, e))?;
        let this = self.clone();
        let key = key.to_string();
        Ok(r.into_stream().map_err(move |e| this.err("read", &key, e)).boxed())
    }

    /// Size and time of an object, `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        match self.inner.head(&self.path(key)).await {
            Ok(m) => Ok(Some(ObjectInfo { key: key.to_string(), size: m.size, last_modified: m.last_modified })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("look up", key, e)),
        }
    }

    /// Every object under `prefix` (recursively), in no particular order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let p = self.path(prefix.trim_end_matches('/'));
        let mut out = Vec::new();
        let mut s = self.inner.list(Some(&p));
        while let Some(m) = s.next().await {
            match m {
                Ok(m) => out.push(ObjectInfo { key: self.key_of(&m.location), size: m.size, last_modified: m.last_modified }),
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(self.err("list", prefix, e)),
            }
        }
        Ok(out)
    }

    /// The immediate "sub-directories" under `prefix`.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let p = self.path(prefix.trim_end_matches('/'));
        match self.inner.list_with_delimiter(Some(&p)).await {
            Ok(r) => Ok(r
                .common_prefixes
                .iter()
                .filter_map(|c| c.filename().map(|s| s.to_string()))
                .collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(self.err("list", prefix, e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    /// Starts a streamed upload; nothing appears under `key` until [`Upload::finish`] succeeds.
    pub async fn upload(&self, key: &str) -> Result<Upload, StorageError> {
        let up = self.inner.put_multipart(&self.path(key)).await.map_err(|e| self.err("start upload of", key, e))?;
        Ok(Upload {
            writer: WriteMultipart::new_with_chunk_size(up, UPLOAD_PART_SIZE),
            key: key.to_string(),
            storage: self.clone(),
            bytes: 0,
        })
    }
}

/// A streamed, multipart upload with bounded memory (`UPLOAD_CONCURRENCY` × part size).
pub struct Upload {
    writer: WriteMultipart,
    key: String,
    storage: Storage,
    bytes: u64,
}

impl Upload {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.writer
            .wait_for_capacity(UPLOAD_CONCURRENCY)
            .await
            .map_err(|e| self.storage.err("upload", &self.key, e))?;
        self.writer.write(data);
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Completes the upload: only now does the object exist under its key.
    pub async fn finish(self) -> Result<(), StorageError> {
        let Upload { writer, key, storage, .. } = self;
        writer.finish().await.map(|_| ()).map_err(|e| storage.err("complete upload of", &key, e))
    }

    /// Gives up; nothing is left under the key.
    pub async fn abort(self) {
        let _ = self.writer.abort().await;
    }
}
