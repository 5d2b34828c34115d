//! Bundles: the stored objects that hold a backup's file data.
//!
//! Files are streamed one after another into a bundle until it reaches the configured size; a
//! file that crosses the limit is split into pieces, so no object grows past the target (cloud
//! part-count limits) and restores can unpack several bundles at once. Each bundle is sealed
//! (zstd, then AES-256-GCM chunks) on the packing thread and handed chunk by chunk to an async
//! upload task; bounded channels and at most two unfinished uploads keep memory flat whatever the
//! database size ([`upload_budget`]; the whole backup's budget is in `super::memory`).

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::format::{Codec, FormatError, MasterKey, ObjectWriter};
use crate::repository::catalog::{BundleEntry, Piece};
use crate::repository::layout;
use crate::repository::ObjectSealing;
use crate::storage::{Storage, StorageError, UPLOAD_PART_SIZE};

/// Sealed bytes are sent to the uploader in chunks of this size.
pub const SEND_CHUNK: usize = 1024 * 1024;
/// Chunks buffered between the packer and one bundle's upload. The upload copies them into its
/// parts at once, so two are enough to keep it fed.
pub const CHANNEL_DEPTH: usize = 2;
/// Bundles whose upload may still be running while the next one is being packed: the previous
/// bundle's last parts and its completion overlap the start of the next one.
pub const MAX_PENDING_UPLOADS: usize = 2;
/// The most memory the uploads of one backup hold with `parallel` parts in flight per upload:
/// the parts of each unfinished upload (the ones in flight and the one being filled), and for
/// the bundle being packed its channel and the chunk being filled (a committed bundle's channel
/// is already drained into its upload).
pub const fn upload_budget(parallel: usize) -> usize {
    MAX_PENDING_UPLOADS * (parallel + 1) * UPLOAD_PART_SIZE + (CHANNEL_DEPTH + 1) * SEND_CHUNK
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("sealing bundle {bundle}: {source}")]
    Format { bundle: u32, source: FormatError },
    #[error("the upload of bundle {0} stopped before the backup finished (see the error before this one)")]
    UploadGone(u32),
    #[error("upload task failed: {0}")]
    Join(String),
}

enum Msg {
    Data(Bytes),
    Commit,
}

/// `Write` end that ships sealed bytes to the upload task.
struct UploadSink {
    tx: mpsc::Sender<Msg>,
    buf: Vec<u8>,
    bundle: u32,
}

impl UploadSink {
    fn ship(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(SEND_CHUNK)));
        self.tx.blocking_send(Msg::Data(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                BundleError::UploadGone(self.bundle).to_string(),
            )
        })
    }
}

impl Write for UploadSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = SEND_CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= SEND_CHUNK {
            self.ship()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.ship()
    }
}

struct OpenBundle {
    id: u32,
    writer: ObjectWriter<UploadSink>,
    plain: u64,
}

/// Packs file data into bundles and uploads them. Lives on a blocking thread.
pub struct BundleWriter {
    rt: Handle,
    storage: Storage,
    backup_id: String,
    sealing: ObjectSealing,
    target: u64,
    current: Option<OpenBundle>,
    next_id: u32,
    pending: Vec<(u32, JoinHandle<Result<(), StorageError>>)>,
    done: Vec<BundleEntry>,
    piece: Option<PieceState>,
    upload_parallel: usize,
}

struct PieceState {
    bundle: u32,
    bundle_offset: u64,
    file_offset: u64,
    len: u64,
    hash: Sha256,
}

impl BundleWriter {
    /// A writer of version-1 bundles (not identity-bound). Prefer
    /// [`Repository::bundle_writer`](crate::repository::Repository::bundle_writer), which writes
    /// the repository's object version.
    pub fn new(
        rt: Handle,
        storage: Storage,
        backup_id: &str,
        codec: Codec,
        key: Option<Arc<MasterKey>>,
        target: u64,
    ) -> Self {
        Self::with_sealing(rt, storage, backup_id, ObjectSealing::v1(codec, key), target)
    }

    /// A writer sealing bundles with `sealing` (v2 bundles are bound to their keys).
    pub fn with_sealing(rt: Handle, storage: Storage, backup_id: &str, sealing: ObjectSealing, target: u64) -> Self {
        BundleWriter {
            rt,
            storage,
            backup_id: backup_id.to_string(),
            sealing,
            target: target.max(1),
            current: None,
            next_id: 0,
            pending: Vec::new(),
            done: Vec::new(),
            piece: None,
            upload_parallel: 1,
        }
    }

    /// Sends up to `parallel` parts of each bundle's upload at once (default 1; see
    /// [`upload_budget`]).
    pub fn with_upload_parallel(mut self, parallel: usize) -> Self {
        self.upload_parallel = parallel.max(1);
        self
    }

    fn open_bundle(&mut self) -> Result<(), BundleError> {
        while self.pending.len() >= MAX_PENDING_UPLOADS {
            let (id, h) = self.pending.remove(0);
            self.await_upload(id, h)?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let (tx, mut rx) = mpsc::channel::<Msg>(CHANNEL_DEPTH);
        let storage = self.storage.clone();
        let key = layout::bundle_key(&self.backup_id, id);
        let parallel = self.upload_parallel;
        let handle = self.rt.spawn(async move {
            let mut up = storage.upload(&key).await?.with_concurrency(parallel);
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Data(b) => {
                        if let Err(e) = up.write(&b).await {
                            up.abort().await;
                            return Err(e);
                        }
                    }
                    Msg::Commit => return up.finish().await,
                }
            }
            // The packer went away without committing: leave nothing behind.
            up.abort().await;
            Ok(())
        });
        self.pending.push((id, handle));
        let sink = UploadSink {
            tx,
            buf: Vec::with_capacity(SEND_CHUNK),
            bundle: id,
        };
        let writer = self
            .sealing
            .writer(sink, &layout::bundle_key(&self.backup_id, id))
            .map_err(|source| BundleError::Format { bundle: id, source })?;
        self.current = Some(OpenBundle { id, writer, plain: 0 });
        Ok(())
    }

    fn await_upload(&self, id: u32, h: JoinHandle<Result<(), StorageError>>) -> Result<(), BundleError> {
        match self.rt.block_on(h) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(BundleError::Join(format!("bundle {id}: {e}"))),
        }
    }

    /// When writing into a bundle fails because its upload task stopped, the task's own error
    /// (which names the store, the key and the cause) is the one worth reporting.
    fn explain(&mut self, bundle: u32, fallback: BundleError) -> BundleError {
        let Some(at) = self.pending.iter().position(|(id, _)| *id == bundle) else {
            return fallback;
        };
        // The task drops its channel as it returns; give it a moment to be reaped. A task that is
        // still running is waiting for us, so never block on it.
        for _ in 0..50 {
            if self.pending[at].1.is_finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !self.pending[at].1.is_finished() {
            return fallback;
        }
        let (_, h) = self.pending.remove(at);
        match self.rt.block_on(h) {
            Ok(Err(e)) => BundleError::Storage(e),
            _ => fallback,
        }
    }

    fn close_bundle(&mut self) -> Result<(), BundleError> {
        self.end_piece();
        let Some(b) = self.current.take() else {
            return Ok(());
        };
        let id = b.id;
        let (mut sink, stats) = match b.writer.finish() {
            Ok(r) => r,
            Err(source) => return Err(self.explain(id, BundleError::Format { bundle: id, source })),
        };
        if sink.ship().is_err() || sink.tx.blocking_send(Msg::Commit).is_err() {
            drop(sink);
            return Err(self.explain(id, BundleError::UploadGone(id)));
        }
        self.done.push(BundleEntry {
            id,
            size: b.plain,
            stored_size: stats.stored_bytes,
        });
        Ok(())
    }

    fn end_piece(&mut self) -> Option<Piece> {
        let p = self.piece.take()?;
        Some(Piece {
            bundle: p.bundle,
            bundle_offset: p.bundle_offset,
            file_offset: p.file_offset,
            len: p.len,
            sha256: hex::encode(p.hash.finalize()),
        })
    }

    /// Appends the bytes of one file, read from `src` until EOF. Returns the file's pieces and
    /// its CRC-32C (for the server manifest) and size.
    pub fn add_file(
        &mut self,
        src: &mut dyn std::io::Read,
        buf: &mut [u8],
    ) -> Result<(Vec<Piece>, u32, u64), AddFileError> {
        let mut pieces = Vec::new();
        let mut crc = 0u32;
        let mut offset = 0u64;
        loop {
            let n = src.read(buf).map_err(AddFileError::Read)?;
            if n == 0 {
                break;
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            let mut data = &buf[..n];
            while !data.is_empty() {
                if self.current.as_ref().is_none_or(|b| b.plain >= self.target) {
                    if let Some(p) = self.end_piece() {
                        pieces.push(p);
                    }
                    self.close_bundle()?;
                    self.open_bundle()?;
                }
                let bundle = self.current.as_mut().ok_or(BundleError::UploadGone(u32::MAX))?;
                let room = (self.target - bundle.plain).min(data.len() as u64) as usize;
                let piece = self.piece.get_or_insert_with(|| PieceState {
                    bundle: bundle.id,
                    bundle_offset: bundle.plain,
                    file_offset: offset,
                    len: 0,
                    hash: Sha256::new(),
                });
                piece.hash.update(&data[..room]);
                piece.len += room as u64;
                if let Err(e) = bundle.writer.write_all(&data[..room]) {
                    let id = bundle.id;
                    return Err(match self.explain(id, BundleError::UploadGone(id)) {
                        BundleError::UploadGone(_) => AddFileError::Write(e),
                        explained => AddFileError::Bundle(explained),
                    });
                }
                bundle.plain += room as u64;
                offset += room as u64;
                data = &data[room..];
            }
        }
        if let Some(p) = self.end_piece() {
            pieces.push(p);
        }
        Ok((pieces, crc, offset))
    }

    /// Seals the last bundle and waits for every upload to be stored.
    pub fn finish(mut self) -> Result<Vec<BundleEntry>, BundleError> {
        self.close_bundle()?;
        for (id, h) in std::mem::take(&mut self.pending) {
            self.await_upload(id, h)?;
        }
        Ok(std::mem::take(&mut self.done))
    }

    /// Gives up: pending uploads see their channel close and abort.
    pub fn abandon(mut self) {
        self.current = None;
        for (_, h) in std::mem::take(&mut self.pending) {
            let _ = self.rt.block_on(h);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddFileError {
    #[error("reading the backup stream: {0}")]
    Read(std::io::Error),
    #[error("writing a bundle: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}
