//! The local-disk repository backend: object_store's `LocalFileSystem` made durable.
//!
//! `LocalFileSystem` writes a staging file and renames it into place, which is atomic but not
//! durable: nothing is fsynced, so a power cut right after `archive_command` returned 0 (and
//! PostgreSQL recycled the segment) could lose WAL. This wrapper keeps object_store's layout and
//! reads, and replaces the write paths with temp file → fsync → rename (or hard link for
//! create-if-absent) → fsync of the directories, so an object is either absent or complete and on
//! disk under its final name.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// A `LocalFileSystem` whose writes are fsynced before they become visible.
#[derive(Debug)]
pub struct DurableLocal {
    root: PathBuf,
    inner: Arc<LocalFileSystem>,
}

impl DurableLocal {
    /// Opens (and with `create`, makes) the repository directory.
    pub fn new(root: &FsPath, create: bool) -> std::io::Result<DurableLocal> {
        if create {
            std::fs::create_dir_all(root)?;
        }
        let root = std::fs::canonicalize(root)?;
        let inner = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(DurableLocal { root, inner: Arc::new(inner) })
    }

    pub fn root(&self) -> &FsPath {
        &self.root
    }

    fn fs_path(&self, location: &Path) -> PathBuf {
        let mut p = self.root.clone();
        for part in location.parts() {
            p.push(part.as_ref());
        }
        p
    }
}

impl fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file://{}", self.root.display())
    }
}

fn generic(e: std::io::Error, path: &FsPath) -> object_store::Error {
    if e.kind() == ErrorKind::NotFound {
        return object_store::Error::NotFound { path: path.display().to_string(), source: e.into() };
    }
    object_store::Error::Generic { store: "local", source: format!("{}: {e}", path.display()).into() }
}

/// fsyncs a directory and its ancestors up to and including `root`, so new entries survive a crash.
fn sync_dirs(from: &FsPath, root: &FsPath) -> std::io::Result<()> {
    let mut dir = from.to_path_buf();
    loop {
        File::open(&dir)?.sync_all()?;
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return Ok(());
        }
    }
}

fn staging_path(dest: &FsPath) -> PathBuf {
    // The `#<digits>` suffix is object_store's own staging convention: listings skip such names.
    let mut s = dest.as_os_str().to_owned();
    s.push(format!("#{}", rand::random::<u32>() | 1));
    PathBuf::from(s)
}

fn durable_put(root: &FsPath, dest: &FsPath, payload: &PutPayload, mode: &PutMode) -> std::io::Result<bool> {
    let parent = dest.parent().unwrap_or(root).to_path_buf();
    std::fs::create_dir_all(&parent)?;
    let tmp = staging_path(dest);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        for chunk in payload.iter() {
            f.write_all(chunk)?;
        }
        f.sync_all()?;
        drop(f);
        let created = match mode {
            PutMode::Create => match std::fs::hard_link(&tmp, dest) {
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
                Err(e) => return Err(e),
            },
            _ => {
                std::fs::rename(&tmp, dest)?;
                true
            }
        };
        sync_dirs(&parent, root)?;
        Ok(created)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        if matches!(opts.mode, PutMode::Update(_)) {
            return Err(object_store::Error::NotImplemented);
        }
        let dest = self.fs_path(location);
        let root = self.root.clone();
        let mode = opts.mode.clone();
        let d = dest.clone();
        let created = tokio::task::spawn_blocking(move || durable_put(&root, &d, &payload, &mode))
            .await
            .map_err(|e| object_store::Error::Generic { store: "local", source: e.into() })?
            .map_err(|e| generic(e, &dest))?;
        if !created {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "object exists".into(),
            });
        }
        Ok(PutResult { e_tag: None, version: None })
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(DurableUpload { inner, dest: self.fs_path(location), root: self.root.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        self.inner.get_range(location, range).await
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// A streamed upload whose file and directory are fsynced when it completes.
#[derive(Debug)]
struct DurableUpload {
    inner: Box<dyn MultipartUpload>,
    dest: PathBuf,
    root: PathBuf,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let r = self.inner.complete().await?;
        let dest = self.dest.clone();
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            File::open(&dest)?.sync_all()?;
            sync_dirs(dest.parent().unwrap_or(&root), &root)
        })
        .await
        .map_err(|e| object_store::Error::Generic { store: "local", source: e.into() })?
        .map_err(|e| generic(e, &self.dest))?;
        Ok(r)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
