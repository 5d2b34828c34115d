//! Parallel unpacking of bundles into the restored data directory.
//!
//! Each bundle is downloaded as a stream, opened (decrypted, decompressed, authenticated chunk
//! by chunk) on a blocking thread, and its pieces are written at their offsets into the files
//! they belong to, each checked against its SHA-256. Up to `parallel` bundles are in flight at
//! once, which keeps both cores and the network busy; memory per bundle is a few chunks.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::format::{into_format_error, FormatError};
use crate::progress::Progress;
use crate::repository::catalog::{FileEntry, Piece};
use crate::repository::objects::ChannelReader;
use crate::repository::{layout, BackupCatalog, ObjectSealing, Repository};
use crate::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{location}: {source}; the backup cannot be restored from this copy (try an older backup, or a second repository)")]
    Object { location: String, source: FormatError },
    #[error("{path}: checksum mismatch in bundle {bundle} at offset {offset} (expected {expected}, got {found}); the stored backup is corrupted")]
    Checksum { path: String, bundle: u32, offset: u64, expected: String, found: String },
    #[error("{location}: the bundle ended early (at byte {at}, the catalog expects more); the stored backup is truncated")]
    Short { location: String, at: u64 },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("unpacking bundle {0} failed: {1}")]
    Task(u32, String),
}

/// Downloads and unpacks every bundle of `cat`.
pub async fn unpack_all(
    repo: &Repository,
    cat: &BackupCatalog,
    files: Arc<Vec<FileEntry>>,
    dests: Arc<Vec<PathBuf>>,
    parallel: usize,
    progress: Arc<dyn Progress>,
) -> Result<(), UnpackError> {
    // Every file exists (empty) before pieces land in it, so empty files are restored too.
    {
        let dests = dests.clone();
        tokio::task::spawn_blocking(move || -> Result<(), UnpackError> {
            for d in dests.iter() {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(d)
                    .map_err(|source| UnpackError::Write { path: d.clone(), source })?;
            }
            Ok(())
        })
        .await
        .map_err(|e| UnpackError::Task(u32::MAX, e.to_string()))??;
    }

    let mut work: HashMap<u32, Vec<(usize, Piece)>> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        for p in &f.pieces {
            work.entry(p.bundle).or_default().push((i, p.clone()));
        }
    }
    let mut bundles: Vec<(u32, Vec<(usize, Piece)>)> = work.into_iter().collect();
    // Largest first: the longest unpack starts earliest.
    bundles.sort_by_key(|(id, pieces)| (std::cmp::Reverse(pieces.iter().map(|p| p.1.len).sum::<u64>()), *id));

    let sem = Arc::new(Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for (bundle, mut pieces) in bundles {
        pieces.sort_by_key(|(_, p)| p.bundle_offset);
        let permit = sem.clone().acquire_owned().await.map_err(|e| UnpackError::Task(bundle, e.to_string()))?;
        let storage = repo.storage().clone();
        let sealing = repo.sealing();
        let (files, dests, progress) = (files.clone(), dests.clone(), progress.clone());
        let backup = cat.id.clone();
        tasks.spawn(async move {
            let r = unpack_bundle(storage, backup, bundle, sealing, pieces, files, dests, progress).await;
            drop(permit);
            r
        });
        // Fail fast: stop scheduling once a bundle failed.
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| UnpackError::Task(bundle, e.to_string()))??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| UnpackError::Task(u32::MAX, e.to_string()))??;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn unpack_bundle(
    storage: Storage,
    backup: String,
    bundle: u32,
    sealing: ObjectSealing,
    pieces: Vec<(usize, Piece)>,
    files: Arc<Vec<FileEntry>>,
    dests: Arc<Vec<PathBuf>>,
    progress: Arc<dyn Progress>,
) -> Result<(), UnpackError> {
    let object_key = layout::bundle_key(&backup, bundle);
    let location = format!("{storage}/{object_key}");
    let reader = ChannelReader::download(&storage, &object_key).await?;
    let result = tokio::task::spawn_blocking(move || {
        let mut obj = sealing
            .reader(reader, &object_key)
            .map_err(|source| UnpackError::Object { location: location.clone(), source })?;
        let mut pos = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        let mut open: HashMap<usize, File> = HashMap::new();
        // A storage failure surfaces through the reader as a plain I/O error whose text names
        // the store and the key.
        let read_err = |e: std::io::Error, location: &str| UnpackError::Object {
            location: location.to_string(),
            source: into_format_error(e),
        };
        for (fi, piece) in &pieces {
            if piece.bundle_offset > pos {
                let skip = piece.bundle_offset - pos;
                let n = std::io::copy(&mut (&mut obj).take(skip), &mut std::io::sink()).map_err(|e| read_err(e, &location))?;
                if n < skip {
                    return Err(UnpackError::Short { location: location.clone(), at: pos + n });
                }
                pos += skip;
            }
            let path = &dests[*fi];
            let file = match open.get_mut(fi) {
                Some(f) => f,
                None => {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|source| UnpackError::Write { path: path.clone(), source })?;
                    open.entry(*fi).or_insert(f)
                }
            };
            let werr = |source| UnpackError::Write { path: path.clone(), source };
            file.seek(SeekFrom::Start(piece.file_offset)).map_err(werr)?;
            let mut hash = Sha256::new();
            let mut left = piece.len;
            while left > 0 {
                let want = (buf.len() as u64).min(left) as usize;
                let n = obj.read(&mut buf[..want]).map_err(|e| read_err(e, &location))?;
                if n == 0 {
                    return Err(UnpackError::Short { location: location.clone(), at: pos });
                }
                hash.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(werr)?;
                left -= n as u64;
                pos += n as u64;
                progress.advance(n as u64);
            }
            let found = hex::encode(hash.finalize());
            if found != piece.sha256 {
                return Err(UnpackError::Checksum {
                    path: files[*fi].path.clone(),
                    bundle,
                    offset: piece.bundle_offset,
                    expected: piece.sha256.clone(),
                    found,
                });
            }
        }
        // Read to the end so the final chunk is authenticated (detects truncation after the
        // last piece, and anything appended).
        std::io::copy(&mut obj, &mut std::io::sink()).map_err(|e| read_err(e, &location))?;
        for (fi, f) in open {
            f.sync_all().map_err(|source| UnpackError::Write { path: dests[fi].clone(), source })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| UnpackError::Task(bundle, e.to_string()));
    result?
}
