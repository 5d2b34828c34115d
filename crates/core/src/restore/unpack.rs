//! Parallel unpacking of bundles into the restored data directory.
//!
//! Each bundle is downloaded as a stream, opened (decrypted, decompressed, authenticated chunk
//! by chunk) on a blocking thread, and its pieces are written at their offsets into the files
//! they belong to, each checked against its SHA-256. Up to `parallel` bundles are in flight at
//! once, which keeps both cores and the network busy; memory per bundle is a few chunks.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::paths::{Dest, PathError};
use crate::repository::walk::{walk_bundle, WalkError};

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
    Checksum {
        path: String,
        bundle: u32,
        offset: u64,
        expected: String,
        found: String,
    },
    #[error(
        "{location}: the bundle ended early (at byte {at}, the catalog expects more); the stored backup is truncated"
    )]
    Short { location: String, at: u64 },
    #[error("{location}: the catalog's pieces overlap at bundle offset {offset}; the catalog is damaged or forged")]
    Overlap { location: String, offset: u64 },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("unpacking bundle {0} failed: {1}")]
    Task(u32, String),
}

/// Downloads and unpacks every bundle of `cat`.
pub async fn unpack_all(
    repo: &Repository,
    cat: &BackupCatalog,
    files: Arc<Vec<FileEntry>>,
    dests: Arc<Vec<Dest>>,
    parallel: usize,
    progress: Arc<dyn Progress>,
) -> Result<(), UnpackError> {
    // Every file exists (empty) before pieces land in it, so empty files are restored too.
    {
        let dests = dests.clone();
        tokio::task::spawn_blocking(move || -> Result<(), UnpackError> {
            for d in dests.iter() {
                super::paths::create_file(d)?;
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
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| UnpackError::Task(bundle, e.to_string()))?;
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
    dests: Arc<Vec<Dest>>,
    progress: Arc<dyn Progress>,
) -> Result<(), UnpackError> {
    let object_key = layout::bundle_key(&backup, bundle);
    let location = format!("{storage}/{object_key}");
    let reader = ChannelReader::download(&storage, &object_key).await?;
    let result = tokio::task::spawn_blocking(move || {
        let mut obj = sealing
            .reader(reader, &object_key)
            .map_err(|source| UnpackError::Object {
                location: location.clone(),
                source,
            })?;
        let mut open: HashMap<usize, File> = HashMap::new();
        // The one bundle verifier walks the pieces (sorted by bundle offset) and checks each
        // one's SHA-256; this sink writes them into their files.
        let walked = walk_bundle(
            &mut obj,
            pieces.iter().map(|(_, p)| p),
            None,
            |i, piece, done, bytes| {
                let fi = pieces[i].0;
                let path = &dests[fi];
                let file = match open.get_mut(&fi) {
                    Some(f) => f,
                    None => {
                        let f = super::paths::open_nofollow(path)?;
                        open.entry(fi).or_insert(f)
                    }
                };
                let werr = |source| UnpackError::Write {
                    path: path.full(),
                    source,
                };
                if done == 0 {
                    file.seek(SeekFrom::Start(piece.file_offset)).map_err(werr)?;
                }
                file.write_all(bytes).map_err(werr)?;
                progress.advance(bytes.len() as u64);
                Ok(())
            },
        );
        if let Err(e) = walked {
            return Err(match e {
                // A storage failure surfaces through the reader as a plain I/O error whose text
                // names the store and the key.
                WalkError::Read(e) => UnpackError::Object {
                    location: location.clone(),
                    source: into_format_error(e),
                },
                WalkError::Short { at } | WalkError::Size { found: at, .. } => UnpackError::Short {
                    location: location.clone(),
                    at,
                },
                WalkError::Overlap { offset } => UnpackError::Overlap {
                    location: location.clone(),
                    offset,
                },
                WalkError::Checksum {
                    index,
                    offset,
                    expected,
                    found,
                } => UnpackError::Checksum {
                    path: files[pieces[index].0].path.clone(),
                    bundle,
                    offset,
                    expected,
                    found,
                },
                WalkError::Sink(e) => e,
            });
        }
        for (fi, f) in open {
            f.sync_all().map_err(|source| UnpackError::Write {
                path: dests[fi].full(),
                source,
            })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| UnpackError::Task(bundle, e.to_string()));
    result?
}
