//! The WAL archive: what `archive_command` and `restore_command` do.
//!
//! A push runs once per WAL segment on PostgreSQL's hot path, so it does the least it can, in
//! two halves that can overlap: [`prepare_push`] reads and compresses the file (needs only the
//! configuration), [`push_prepared`] checks it belongs to the repository's cluster, seals it with
//! the repository key and stores it with a create-if-absent write. PostgreSQL's rules for archive commands are followed to the letter: an
//! identical file already archived is success, a different one is an error that overwrites
//! nothing. `fetch` is the other direction, and distinguishes "not in the archive" (a quiet,
//! normal end of recovery) from real failures (corruption, wrong passphrase, storage errors),
//! which must stop recovery rather than let PostgreSQL promote early.

pub mod async_mode;
pub mod batch;
pub mod dropped;
pub mod pushed;
pub mod spool;
pub mod spool_worker;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::format::{self, Codec};
use crate::repository::{Repository, RepositoryError};
use crate::timeline::{parse_history, TimelineError};
use crate::wal::{self, WalError, WalFileName, WalKind, WalSummary};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source} (check free space and permissions of the directory)")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{name} is already archived in {location} with different content; nothing was overwritten. Two clusters may be archiving into one repository, or this cluster was restored without a new timeline: check archive_command on every server pointing at this repository")]
    DifferentContent { name: String, location: String },
    #[error("{name} is not a valid timeline history file: {source}; nothing was stored")]
    BadHistory { name: String, source: TimelineError },
    #[error("spool_path {path} cannot be used: {why}")]
    SpoolPlacement { path: PathBuf, why: String },
    #[error("a compression worker failed: {0}")]
    Worker(String),
    #[error("archived {name} in {location} fails its check after decryption: {source}")]
    Invalid {
        name: String,
        location: String,
        source: WalError,
    },
}

pub use crate::repository::PushOutcome;

/// A WAL file read from disk and compressed, waiting for the repository's key to be sealed.
/// Preparing needs only the configuration, so `archive_command` compresses while the repository
/// opens (network round trip and the memory-hard key derivation), on another core.
pub struct PreparedWal {
    name: WalFileName,
    data: Vec<u8>,
    compressed: Option<Vec<u8>>,
    codec: Codec,
    /// What the segment holds (commit times, restore points), stored with it as JSON.
    summary: Option<WalSummary>,
}

/// The summary push stores with a segment: its commit-time range and restore points, read with
/// the server's own clock values. Needs only the file: the segment size and major version come
/// from its first page header (a file that has none is refused later by the cluster check).
fn summarize(name: &WalFileName, data: &[u8]) -> Option<WalSummary> {
    if !name.has_page_header() {
        return None;
    }
    let h = wal::read_segment_header(name, data).ok()?;
    let major = [15, 16, 17, 18]
        .into_iter()
        .find(|m| wal::page_magic_for_major(*m) == Some(h.magic))?;
    Some(wal::summarize_segment(name, data, u64::from(h.segment_size), major))
}

/// Reads and compresses the WAL file at `path` (`%p`, relative to the data directory, which is
/// the working directory of `archive_command`).
pub fn prepare_push(path: &Path, codec: &Codec) -> Result<PreparedWal, ArchiveError> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| WalError::BadName(path.display().to_string()))?;
    let name = WalFileName::parse(file_name)?;
    let data = std::fs::read(path).map_err(|source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let compressed = format::compress_for_seal(&data, codec).map_err(|source| RepositoryError::Object {
        location: "(new object)".into(),
        source,
    })?;
    let summary = summarize(&name, &data);
    Ok(PreparedWal {
        name,
        data,
        compressed,
        codec: codec.clone(),
        summary,
    })
}

/// Stores a prepared WAL file: checks it belongs to the repository's cluster (a segment's page
/// header; a `.history` or `.backup` file's content), seals it with its summary and writes it
/// create-if-absent.
pub async fn push_prepared(repo: &Repository, wal: PreparedWal) -> Result<PushOutcome, ArchiveError> {
    let PreparedWal {
        name,
        data,
        compressed,
        codec,
        summary,
    } = wal;
    repo.check_wal(&name, &data)?;
    check_content(repo, &name, &data)?;
    let metadata = summary.and_then(|s| serde_json::to_vec(&s).ok());
    // Compressed ahead with the configuration's codec; used only if it is the repository's.
    let compressed = compressed.filter(|_| codec.compression == repo.codec().compression);
    match repo
        .put_wal(&name, &data, compressed.as_deref(), metadata.as_deref())
        .await
    {
        Err(RepositoryError::WalDifferentContent { name, location }) => {
            Err(ArchiveError::DifferentContent { name, location })
        }
        other => Ok(other?),
    }
}

/// A `.history` file must parse as the history of the timeline its name says (restore builds
/// the timeline tree from these); a `.backup` file must describe the backup its name says.
fn check_content(repo: &Repository, name: &WalFileName, data: &[u8]) -> Result<(), ArchiveError> {
    match name.kind {
        WalKind::History => {
            parse_history(name.timeline, data).map_err(|source| ArchiveError::BadHistory {
                name: name.to_string(),
                source,
            })?;
        }
        WalKind::Backup { .. } => {
            let info = wal::parse_backup_file(data)?;
            wal::check_backup_file(name, &info, repo.cluster().wal_segment_size)?;
        }
        WalKind::Segment | WalKind::Partial => {}
    }
    Ok(())
}

/// Result of `fetch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    Restored {
        bytes: u64,
    },
    /// Not in the repository: the normal end of the archive for recovery.
    NotFound,
}

/// Restores one WAL file `name` (`%f`) to `dest` (`%p`), atomically.
pub async fn fetch(repo: &Repository, name: &str, dest: &Path) -> Result<FetchOutcome, ArchiveError> {
    let name = WalFileName::parse(name)?;
    let Some(plain) = fetch_checked(repo, &name).await? else {
        return Ok(FetchOutcome::NotFound);
    };
    write_atomically(dest, &plain, false)?;
    Ok(FetchOutcome::Restored {
        bytes: plain.len() as u64,
    })
}

/// The authenticated plaintext of archived WAL file `name`, checked as a file of the
/// repository's cluster; `None` when it is not archived.
pub async fn fetch_checked(repo: &Repository, name: &WalFileName) -> Result<Option<Vec<u8>>, ArchiveError> {
    let Some(plain) = repo.get_wal(name).await? else {
        return Ok(None);
    };
    repo.check_wal(name, &plain).map_err(|source| ArchiveError::Invalid {
        name: name.to_string(),
        location: repo.storage().to_string(),
        source,
    })?;
    Ok(Some(plain))
}

/// Writes `data` to a temporary name beside `dest` and renames it into place, so a reader never
/// sees a half-written file. With `durable`, the data and the directory entry are fsynced.
pub fn write_atomically(dest: &Path, data: &[u8], durable: bool) -> Result<(), ArchiveError> {
    let err = |source| ArchiveError::Write {
        path: dest.to_path_buf(),
        source,
    };
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(format!(".pgvault-{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, dest)?;
        if durable {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}
