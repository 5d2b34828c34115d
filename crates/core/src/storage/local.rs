//! The local-disk repository backend: object_store's `LocalFileSystem` made durable.
//!
//! `LocalFileSystem` writes a staging file and renames it into place, which is atomic but not
//! durable: nothing is fsynced, so a power cut right after `archive_command` returned 0 (and
//! PostgreSQL recycled the segment) could lose WAL. This wrapper keeps object_store's layout and
//! reads, and replaces the write paths with temp file → fsync → rename (or hard link for
//! create-if-absent) → fsync of the directories, so an object is either absent or complete and on
//! disk under its final name.
//!
//! A repository holds a cluster's data (plaintext when unencrypted), so it is private to the
//! user running pgvault: every file is created 0600 and every directory 0700, whatever the umask,
//! including the repository root when `init` creates it (a root the operator made is left as is).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, UploadPart,
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
        if create && !root.exists() {
            if let Some(parent) = root.parent() {
                std::fs::create_dir_all(parent)?;
            }
            make_private_dir(root)?;
        }
        let root = std::fs::canonicalize(root)?;
        let inner = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(DurableLocal {
            root,
            inner: Arc::new(inner),
        })
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

/// Mode of every file in a local repository.
const FILE_MODE: u32 = 0o600;
/// Mode of every directory a local repository creates.
const DIR_MODE: u32 = 0o700;

/// An I/O error with the path it concerns; the `io::Error` stays the source, so its kind
/// (timed out, permission denied, …) decides the storage error's kind.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
struct LocalIoError {
    path: PathBuf,
    source: std::io::Error,
}

fn generic(e: std::io::Error, path: &FsPath) -> object_store::Error {
    if e.kind() == ErrorKind::NotFound {
        return object_store::Error::NotFound {
            path: path.display().to_string(),
            source: e.into(),
        };
    }
    if e.kind() == ErrorKind::PermissionDenied {
        let source = Box::new(LocalIoError {
            path: path.to_path_buf(),
            source: e,
        });
        return object_store::Error::PermissionDenied {
            path: path.display().to_string(),
            source,
        };
    }
    object_store::Error::Generic {
        store: "local",
        source: Box::new(LocalIoError {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Creates one directory 0700 (umask-independent); an existing directory is fine.
fn make_private_dir(dir: &FsPath) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and its missing ancestors below `root` (which exists), each 0700.
fn create_private_dirs(dir: &FsPath, root: &FsPath) -> std::io::Result<()> {
    if dir.is_dir() || !dir.starts_with(root) || dir == root {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_private_dirs(parent, root)?;
    }
    make_private_dir(dir)
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
    create_private_dirs(&parent, root)?;
    let tmp = staging_path(dest);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
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
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if matches!(opts.mode, PutMode::Update(_)) {
            return Err(object_store::Error::NotImplemented);
        }
        let dest = self.fs_path(location);
        let root = self.root.clone();
        let mode = opts.mode.clone();
        let d = dest.clone();
        let created = tokio::task::spawn_blocking(move || durable_put(&root, &d, &payload, &mode))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "local",
                source: e.into(),
            })?
            .map_err(|e| generic(e, &dest))?;
        if !created {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "object exists".into(),
            });
        }
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // The staging file object_store writes has the umask's mode; a private parent directory
        // keeps it unreadable to others until `complete` makes it 0600.
        let dest = self.fs_path(location);
        let (parent, root) = (dest.parent().unwrap_or(&self.root).to_path_buf(), self.root.clone());
        tokio::task::spawn_blocking(move || create_private_dirs(&parent, &root))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "local",
                source: e.into(),
            })?
            .map_err(|e| generic(e, &dest))?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(DurableUpload {
            inner,
            dest,
            root: self.root.clone(),
        }))
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
            let f = File::open(&dest)?;
            f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
            f.sync_all()?;
            sync_dirs(dest.parent().unwrap_or(&root), &root)
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "local",
            source: e.into(),
        })?
        .map_err(|e| generic(e, &self.dest))?;
        Ok(r)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &FsPath) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Files 0600 and directories 0700 even under a permissive umask; the root `init` creates
    /// included.
    #[tokio::test]
    async fn repository_is_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new-repo");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o002));
        let result = async {
            let store = DurableLocal::new(&root, true).map_err(|e| generic(e, &root))?;
            store
                .put(&Path::from("wal/0000000100000000/seg"), PutPayload::from_static(b"x"))
                .await?;
            let mut up = store.put_multipart(&Path::from("backups/b1/bundles/000001")).await?;
            up.put_part(PutPayload::from_static(b"data")).await?;
            up.complete().await?;
            Ok::<_, object_store::Error>(())
        }
        .await;
        nix::sys::stat::umask(old);
        result.unwrap();
        assert_eq!(mode(&root), 0o700, "repository root");
        for d in [
            "wal",
            "wal/0000000100000000",
            "backups",
            "backups/b1",
            "backups/b1/bundles",
        ] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(&root.join("wal/0000000100000000/seg")), 0o600);
        assert_eq!(mode(&root.join("backups/b1/bundles/000001")), 0o600);
    }
}
