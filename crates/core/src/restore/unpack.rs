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

use super::blockcrc::BlockCrcs;
use super::chain::{Source, SourceMap};
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

/// Files one bundle's unpacker keeps open at once.
const MAX_OPEN_FILES: usize = 64;

/// One piece of a stored file and where its bytes go.
#[derive(Clone)]
struct PieceJob {
    dest: usize,
    piece: Piece,
    /// `None`: the piece's bytes go to the same offsets of the destination file.
    map: Option<Arc<SourceMap>>,
    path: String,
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
    let mut work: HashMap<(String, u32), Vec<PieceJob>> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        for p in &f.pieces {
            work.entry((cat.id.clone(), p.bundle)).or_default().push(PieceJob {
                dest: i,
                piece: p.clone(),
                map: None,
                path: f.path.clone(),
            });
        }
    }
    create_all(dests.clone(), None).await?;
    run_jobs(repo, work, dests, None, parallel, progress).await
}

/// Unpacks a chain of backups in one pass: each source's bytes go where its map sends them.
/// `links` are the backup ids, newest first (`Source::link` indexes them); `sizes` are the
/// output files' final lengths. The CRC-32C of every block written through a map is recorded
/// in `crcs` (for the combined manifest, without reading the files back).
#[allow(clippy::too_many_arguments)]
pub async fn unpack_chain(
    repo: &Repository,
    links: &[String],
    sources: &[Source],
    sizes: Vec<u64>,
    dests: Arc<Vec<Dest>>,
    crcs: Arc<BlockCrcs>,
    parallel: usize,
    progress: Arc<dyn Progress>,
) -> Result<(), UnpackError> {
    let mut work: HashMap<(String, u32), Vec<PieceJob>> = HashMap::new();
    for s in sources {
        let map = s.map.take.as_ref().map(|_| Arc::new(s.map.clone()));
        for p in &s.file.pieces {
            work.entry((links[s.link].clone(), p.bundle))
                .or_default()
                .push(PieceJob {
                    dest: s.output,
                    piece: p.clone(),
                    map: map.clone(),
                    path: format!("{} (backup {})", s.file.path, links[s.link]),
                });
        }
    }
    create_all(dests.clone(), Some(sizes)).await?;
    run_jobs(repo, work, dests, Some(crcs), parallel, progress).await
}

/// Every file exists (empty, or of its final length) before pieces land in it, so empty files
/// are restored too.
async fn create_all(dests: Arc<Vec<Dest>>, sizes: Option<Vec<u64>>) -> Result<(), UnpackError> {
    tokio::task::spawn_blocking(move || -> Result<(), UnpackError> {
        for (i, d) in dests.iter().enumerate() {
            let f = super::paths::create_file(d)?;
            if let Some(len) = sizes.as_ref().and_then(|s| s.get(i)) {
                f.set_len(*len)
                    .map_err(|source| UnpackError::Write { path: d.full(), source })?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| UnpackError::Task(u32::MAX, e.to_string()))?
}

async fn run_jobs(
    repo: &Repository,
    work: HashMap<(String, u32), Vec<PieceJob>>,
    dests: Arc<Vec<Dest>>,
    crcs: Option<Arc<BlockCrcs>>,
    parallel: usize,
    progress: Arc<dyn Progress>,
) -> Result<(), UnpackError> {
    let mut bundles: Vec<((String, u32), Vec<PieceJob>)> = work.into_iter().collect();
    // Largest first: the longest unpack starts earliest.
    bundles.sort_by(|(ka, a), (kb, b)| {
        let size = |v: &Vec<PieceJob>| v.iter().map(|p| p.piece.len).sum::<u64>();
        size(b).cmp(&size(a)).then_with(|| ka.cmp(kb))
    });

    let sem = Arc::new(Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for ((backup, bundle), mut pieces) in bundles {
        pieces.sort_by_key(|p| p.piece.bundle_offset);
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| UnpackError::Task(bundle, e.to_string()))?;
        let storage = repo.storage().clone();
        let sealing = repo.sealing();
        let (dests, progress, crcs) = (dests.clone(), progress.clone(), crcs.clone());
        tasks.spawn(async move {
            let out = Out { dests, crcs, progress };
            let r = unpack_bundle(storage, backup, bundle, sealing, pieces, out).await;
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

/// Where a bundle's pieces go: the destination files, and the CRC record of a chain restore.
struct Out {
    dests: Arc<Vec<Dest>>,
    crcs: Option<Arc<BlockCrcs>>,
    progress: Arc<dyn Progress>,
}

/// Writes `bytes` (source file offset `off` on) where `map` sends them, each contiguous run with
/// one call, recording the CRC of what lands in output `output`.
fn write_mapped(
    file: &File,
    map: &SourceMap,
    mut off: u64,
    mut bytes: &[u8],
    crcs: Option<(&BlockCrcs, usize)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    while !bytes.is_empty() {
        let (to, run) = map.locate_run(off, bytes.len() as u64);
        let n = run.min(bytes.len() as u64) as usize;
        if let Some(to) = to {
            file.write_all_at(&bytes[..n], to)?;
            if let Some((crcs, output)) = crcs {
                crcs.record(output, to, &bytes[..n]);
            }
        }
        off += n as u64;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Asks the kernel to start writing `file`'s dirty pages to disk now, without waiting. The
/// tree is made durable once at the end (`execute::finish_tree`'s `syncfs`); without this, a
/// machine with plenty of memory holds the whole restore dirty in its page cache and that
/// `syncfs` then writes it all after the last byte is unpacked (1 s of a 2.7 s restore of
/// 1.8 GB on the bench bed). Started early, the writes overlap the download and unpacking, as
/// PostgreSQL's own `*_flush_after` settings do. Only a hint: an error changes nothing.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a system call on a descriptor `file` owns for the duration of the call; it
    // reads and writes no memory of this process.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

async fn unpack_bundle(
    storage: Storage,
    backup: String,
    bundle: u32,
    sealing: ObjectSealing,
    pieces: Vec<PieceJob>,
    out: Out,
) -> Result<(), UnpackError> {
    let Out { dests, crcs, progress } = out;
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
            pieces.iter().map(|p| &p.piece),
            None,
            |i, piece, done, bytes| {
                let fi = pieces[i].dest;
                let path = &dests[fi];
                let file = match open.get_mut(&fi) {
                    Some(f) => f,
                    None => {
                        // Bundles (several at once, several links of a chain) can hold
                        // thousands of small files: keep few descriptors. Durability comes
                        // once for the whole tree, at the end (`execute::finish_tree`).
                        if open.len() >= MAX_OPEN_FILES {
                            open.drain().for_each(|(_, f)| start_writeback(&f));
                        }
                        let f = super::paths::open_nofollow(path)?;
                        open.entry(fi).or_insert(f)
                    }
                };
                let werr = |source| UnpackError::Write {
                    path: path.full(),
                    source,
                };
                if let Some(map) = &pieces[i].map {
                    let crcs = crcs.as_deref().map(|c| (c, fi));
                    write_mapped(file, map, piece.file_offset + done, bytes, crcs).map_err(werr)?;
                } else {
                    if done == 0 {
                        file.seek(SeekFrom::Start(piece.file_offset)).map_err(werr)?;
                    }
                    file.write_all(bytes).map_err(werr)?;
                }
                progress.advance(bytes.len() as u64);
                Ok(())
            },
        );
        open.values().for_each(start_writeback);
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
                    path: pieces[index].path.clone(),
                    bundle,
                    offset,
                    expected,
                    found,
                },
                WalkError::Sink(e) => e,
            });
        }
        Ok(())
    })
    .await
    .map_err(|e| UnpackError::Task(bundle, e.to_string()));
    result?
}
