//! The one door to the store for jobs: WAL, catalogs, manifests and bundles are read and
//! written through these [`Repository`] methods, which spell every key (via [`layout`]) and
//! bind every object to it (format v2), so no caller pairs `storage()` with a hand-spelled key
//! and a sealed object can only be opened under the name it was stored under.
//!
//! Also home of the one [`ChannelReader`] (an async download stream read as a blocking
//! `Read`) and of [`ObjectSealing`], the owned sealing context that blocking threads carry.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::backup::bundle::BundleWriter;
use crate::format::{self, Codec, FormatError, MasterKey, ObjectIdentity, ObjectReader, ObjectWriter, OpenedObject};
use crate::repository::index::IndexChange;
use crate::repository::summary::BackupSummary;
use crate::repository::{layout, BackupCatalog, Repository, RepositoryError};
use crate::storage::{PutOutcome, StorageError};
use crate::wal::{self, WalError, WalFileName};

/// What [`Repository::put_wal`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Stored {
        stored_bytes: u64,
    },
    /// The same content was already archived (a retry after a crash, or a second pusher).
    AlreadyArchived,
    /// An unreadable (torn or corrupted) object was under this name and was replaced.
    Repaired,
}

/// The backups of a repository: those whose catalog was read, oldest first, and those whose
/// catalog could not be read, with why (one bad catalog blocks only its own backup).
#[derive(Debug, Default)]
pub struct BackupListing {
    pub backups: Vec<BackupCatalog>,
    pub unreadable: Vec<(String, RepositoryError)>,
}

/// Everything needed to seal and open a repository's objects, owned, so blocking threads and
/// tasks can carry it: the codec, the key, the repository id and the object version to write.
#[derive(Clone)]
pub struct ObjectSealing {
    pub(crate) codec: Codec,
    pub(crate) key: Option<Arc<MasterKey>>,
    pub(crate) repository_id: String,
    /// 1 or 2: what new objects are written as.
    pub(crate) write_version: u8,
}

impl std::fmt::Debug for ObjectSealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSealing")
            .field("encrypted", &self.key.is_some())
            .field("repository_id", &self.repository_id)
            .field("write_version", &self.write_version)
            .finish()
    }
}

impl ObjectSealing {
    /// A sealing context for objects of format version 1 (not identity-bound).
    pub fn v1(codec: Codec, key: Option<Arc<MasterKey>>) -> Self {
        ObjectSealing {
            codec,
            key,
            repository_id: String::new(),
            write_version: 1,
        }
    }

    pub fn identity<'a>(&'a self, key: &'a str) -> ObjectIdentity<'a> {
        ObjectIdentity::new(&self.repository_id, key)
    }

    pub fn key(&self) -> Option<&MasterKey> {
        self.key.as_deref()
    }

    /// Seals `data` for storage under `key`. `compressed`: what [`format::compress_for_seal`]
    /// returned for `data` with this codec, if the caller already compressed. `metadata` is
    /// kept only in version-2 objects (a v1 repository has nowhere to put it).
    pub fn seal(
        &self,
        key: &str,
        data: &[u8],
        compressed: Option<&[u8]>,
        metadata: Option<&[u8]>,
    ) -> Result<Vec<u8>, FormatError> {
        if self.write_version >= 2 {
            format::seal_bound(data, compressed, &self.codec, self.key(), self.identity(key), metadata)
        } else {
            format::seal_precompressed(data, compressed, &self.codec, self.key())
        }
    }

    /// A streaming writer for an object to be stored under `key`.
    pub fn writer<W: Write>(&self, sink: W, key: &str) -> Result<ObjectWriter<W>, FormatError> {
        if self.write_version >= 2 {
            ObjectWriter::new_bound(sink, &self.codec, self.key(), self.identity(key), None)
        } else {
            ObjectWriter::new(sink, &self.codec, self.key())
        }
    }

    /// A streaming reader for an object read from `key` (either version).
    pub fn reader<R: Read>(&self, source: R, key: &str) -> Result<ObjectReader<R>, FormatError> {
        ObjectReader::open(source, self.key(), Some(self.identity(key)))
    }

    /// Opens a whole object read from `key`.
    pub fn open(&self, key: &str, data: &[u8]) -> Result<OpenedObject, FormatError> {
        format::open_object(data, self.key(), Some(self.identity(key)))
    }
}

/// Reads the chunks of a download stream on a blocking thread. Storage errors surface as
/// `io::Error`s whose text names the store, the key and the cause.
pub struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, StorageError>>,
    cur: Bytes,
}

impl ChannelReader {
    /// A reader of what arrives on `rx` (for callers that also use the bytes elsewhere, e.g.
    /// `copy`, which uploads them while they are verified).
    pub fn from_receiver(rx: mpsc::Receiver<Result<Bytes, StorageError>>) -> ChannelReader {
        ChannelReader { rx, cur: Bytes::new() }
    }

    /// Starts forwarding the object under `key` (on the current runtime); the returned reader
    /// must be read on a blocking thread. Dropping the reader stops the download.
    pub async fn download(storage: &crate::storage::Storage, key: &str) -> Result<ChannelReader, StorageError> {
        let mut stream = storage.get_stream(key).await?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(ChannelReader { rx, cur: Bytes::new() })
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

impl Repository {
    /// Checks a WAL segment's (or `.partial`'s) first page header against this repository's
    /// cluster and the file name (the one segment-header check push, fetch and copy share).
    pub fn check_wal(&self, name: &WalFileName, data: &[u8]) -> Result<(), WalError> {
        if !name.has_page_header() {
            return Ok(());
        }
        let c = self.cluster();
        wal::check_segment(name, data, c.system_identifier, c.wal_segment_size, c.major())
    }

    /// Seals and stores WAL file `name` create-if-absent, following PostgreSQL's rules for
    /// archive commands: identical content already stored is success, different content is
    /// [`RepositoryError::WalDifferentContent`] and overwrites nothing, an unreadable (torn)
    /// object is replaced. `compressed`: `data` already compressed with [`Repository::codec`].
    /// `metadata` (e.g. a JSON WAL summary) is sealed in the header of v2 objects.
    pub async fn put_wal(
        &self,
        name: &WalFileName,
        data: &[u8],
        compressed: Option<&[u8]>,
        metadata: Option<&[u8]>,
    ) -> Result<PushOutcome, RepositoryError> {
        let key = layout::wal_key(name);
        let sealed = self
            .sealing()
            .seal(&key, data, compressed, metadata)
            .map_err(|e| self.object_err(&key, e))?;
        let sealed = Bytes::from(sealed);
        let stored_bytes = sealed.len() as u64;
        match self.storage.put_if_absent(&key, sealed.clone()).await? {
            PutOutcome::Created => Ok(PushOutcome::Stored { stored_bytes }),
            PutOutcome::AlreadyExists => {
                let existing = self.storage.get(&key).await?;
                match self.unseal(&key, &existing) {
                    Ok(plain) if plain == data => Ok(PushOutcome::AlreadyArchived),
                    Ok(_) => Err(RepositoryError::WalDifferentContent {
                        name: name.to_string(),
                        location: self.storage.to_string(),
                    }),
                    Err(RepositoryError::Object {
                        source:
                            FormatError::Corrupt { .. } | FormatError::Truncated { .. } | FormatError::NotThisObject { .. },
                        ..
                    }) => {
                        // A torn write (crash between rename and fsync on a filesystem that lost
                        // the data) leaves an object that cannot be opened; it never held WAL
                        // anyone could use, so storing the real content over it loses nothing.
                        // In format 2 that failure cannot be told from an object moved here from
                        // another name; replacing it loses nothing either: it was never this
                        // segment, and the original stays under its own name.
                        tracing::warn!(wal = %name, "replacing an unreadable archived object");
                        self.storage.put(&key, sealed).await?;
                        Ok(PushOutcome::Repaired)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Reads and opens WAL file `name` (with its metadata); `None` when it is not archived.
    /// The content is authenticated but not checked as a segment: see [`Repository::check_wal`].
    pub async fn get_wal_object(&self, name: &WalFileName) -> Result<Option<OpenedObject>, RepositoryError> {
        let key = layout::wal_key(name);
        let Some(raw) = self.storage.get_opt(&key).await? else {
            return Ok(None);
        };
        self.sealing()
            .open(&key, &raw)
            .map(Some)
            .map_err(|e| self.object_err(&key, e))
    }

    /// Reads and opens WAL file `name`; `None` when it is not archived.
    pub async fn get_wal(&self, name: &WalFileName) -> Result<Option<Vec<u8>>, RepositoryError> {
        Ok(self.get_wal_object(name).await?.map(|o| o.data))
    }

    /// The metadata block of archived WAL file `name` (`Ok(None)`: a v1 object, or none was
    /// stored), authenticated without opening the body. The object must exist.
    ///
    /// One ranged read of the first [`format::MAX_HEADER_LEN`] bytes.
    pub async fn wal_metadata(&self, name: &WalFileName) -> Result<Option<Vec<u8>>, RepositoryError> {
        let key = layout::wal_key(name);
        let raw = self.storage.get_prefix(&key, format::MAX_HEADER_LEN as u64).await?;
        let prefix = &raw[..raw.len().min(format::MAX_HEADER_LEN)];
        format::read_metadata(prefix, self.key(), self.identity(&key)).map_err(|e| self.object_err(&key, e))
    }

    /// Whether WAL file `name` is archived.
    pub async fn wal_exists(&self, name: &WalFileName) -> Result<bool, RepositoryError> {
        Ok(self.storage.head(&layout::wal_key(name)).await?.is_some())
    }

    /// Deletes archived WAL file `name` (absent is fine).
    pub async fn delete_wal(&self, name: &WalFileName) -> Result<(), RepositoryError> {
        Ok(self.storage.delete(&layout::wal_key(name)).await?)
    }

    /// Seals and stores a backup's catalog (what makes the backup exist); returns stored bytes.
    pub async fn put_catalog(&self, cat: &BackupCatalog) -> Result<u64, RepositoryError> {
        let key = layout::catalog_key(&cat.id);
        let body = serde_json::to_vec(cat).map_err(|e| RepositoryError::BadCatalog {
            location: self.storage.to_string(),
            key: key.clone(),
            message: format!("cannot encode the catalog: {e}"),
        })?;
        let stored = self.put_sealed(&key, &body).await?;
        // The backup exists now; the index is a cache that the next listing repairs, so a
        // failure to update it does not fail the backup.
        if self.has_backup_index() {
            if let Err(e) = self
                .refresh_index(IndexChange::Stored(Box::new(BackupSummary::from(cat))))
                .await
            {
                tracing::warn!(backup = %cat.id, "could not add the backup to the backup index ({e}); the next listing adds it");
            }
        }
        Ok(stored)
    }

    /// Whether backup `id` has a catalog (is complete).
    pub async fn catalog_exists(&self, id: &str) -> Result<bool, RepositoryError> {
        Ok(self.storage.head(&layout::catalog_key(id)).await?.is_some())
    }

    /// Seals and stores PostgreSQL's `backup_manifest` of backup `id`.
    pub async fn put_manifest(&self, id: &str, manifest: &[u8]) -> Result<u64, RepositoryError> {
        self.put_sealed(&layout::manifest_key(id), manifest).await
    }

    /// PostgreSQL's `backup_manifest` of backup `id`; `None` when none was stored.
    pub async fn get_manifest(&self, id: &str) -> Result<Option<Vec<u8>>, RepositoryError> {
        let key = layout::manifest_key(id);
        let Some(raw) = self.storage.get_opt(&key).await? else {
            return Ok(None);
        };
        self.unseal(&key, &raw).map(Some)
    }

    /// Deletes every object of backup `id`, its catalog first, so that an interrupted delete
    /// never leaves a catalog whose bundles are gone.
    ///
    /// The backup index loses the entry before the catalog goes (so no reader is told of a
    /// backup whose catalog is gone), and again once the objects are gone (in case a concurrent
    /// writer put it back meanwhile; see [`super::index`]).
    pub async fn delete_backup(&self, id: &str) -> Result<(), RepositoryError> {
        if self.has_backup_index() {
            self.refresh_index(IndexChange::Removed(id.to_string())).await?;
        }
        self.storage.delete(&layout::catalog_key(id)).await?;
        for o in self.storage.list(&layout::backup_dir(id)).await? {
            self.storage.delete(&o.key).await?;
        }
        if self.has_backup_index() {
            if let Err(e) = self.refresh_index(IndexChange::Removed(id.to_string())).await {
                tracing::warn!(backup = %id, "could not update the backup index after the delete ({e}); the next listing drops the backup");
            }
        }
        Ok(())
    }

    /// A writer that packs backup `id`'s file data into bundles of about `target` bytes,
    /// sealed in this repository's object version. Lives on a blocking thread.
    pub fn bundle_writer(&self, rt: tokio::runtime::Handle, id: &str, target: u64) -> BundleWriter {
        BundleWriter::with_sealing(rt, self.storage.clone(), id, self.sealing(), target)
    }

    /// [`Repository::bundle_writer`] with the sealing adjusted by `adjust` (the key stays the
    /// repository's): incremental backups raise the compression level.
    pub fn bundle_writer_with(
        &self,
        rt: tokio::runtime::Handle,
        id: &str,
        target: u64,
        adjust: impl FnOnce(ObjectSealing) -> ObjectSealing,
    ) -> BundleWriter {
        BundleWriter::with_sealing(rt, self.storage.clone(), id, adjust(self.sealing()), target)
    }

    /// Bundle `n` of backup `id` as a blocking reader of its authenticated plaintext (read it
    /// on a blocking thread; only `Ok(0)` proves it complete).
    pub async fn open_bundle(&self, id: &str, n: u32) -> Result<ObjectReader<ChannelReader>, RepositoryError> {
        let key = layout::bundle_key(id, n);
        let source = ChannelReader::download(&self.storage, &key).await?;
        let sealing = self.sealing();
        let k = key.clone();
        // Opening reads the header, which blocks on the download.
        let opened = tokio::task::spawn_blocking(move || sealing.reader(source, &k))
            .await
            .map_err(|e| self.object_err(&key, FormatError::Io(std::io::Error::other(e.to_string()))))?;
        opened.map_err(|e| self.object_err(&key, e))
    }
}
