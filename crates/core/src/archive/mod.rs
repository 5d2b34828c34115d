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

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::format::{self, Codec};
use crate::repository::{Repository, RepositoryError};
use crate::wal::{WalError, WalFileName};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source} (check free space and permissions of the directory)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name} is already archived in {location} with different content; nothing was overwritten. Two clusters may be archiving into one repository, or this cluster was restored without a new timeline: check archive_command on every server pointing at this repository")]
    DifferentContent { name: String, location: String },
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
    let compressed =
        format::compress_for_seal(&data, codec).map_err(|source| RepositoryError::Object {
            location: "(new object)".into(),
            source,
        })?;
    Ok(PreparedWal {
        name,
        data,
        compressed,
        codec: codec.clone(),
    })
}

/// Stores a prepared WAL file: checks it belongs to the repository's cluster, seals it and
/// writes it create-if-absent.
pub async fn push_prepared(
    repo: &Repository,
    wal: PreparedWal,
) -> Result<PushOutcome, ArchiveError> {
    push_prepared_with(repo, wal, None).await
}

/// [`push_prepared`] with a metadata block (e.g. a JSON WAL summary) sealed in the object's
/// header, in repositories that write format v2 (dropped in v1 repositories).
pub async fn push_prepared_with(
    repo: &Repository,
    wal: PreparedWal,
    metadata: Option<&[u8]>,
) -> Result<PushOutcome, ArchiveError> {
    let PreparedWal {
        name,
        data,
        compressed,
        codec,
    } = wal;
    repo.check_wal(&name, &data)?;
    // Compressed ahead with the configuration's codec; used only if it is the repository's.
    let compressed = compressed.filter(|_| codec.compression == repo.codec().compression);
    match repo
        .put_wal(&name, &data, compressed.as_deref(), metadata)
        .await
    {
        Err(RepositoryError::WalDifferentContent { name, location }) => {
            Err(ArchiveError::DifferentContent { name, location })
        }
        other => Ok(other?),
    }
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
pub async fn fetch(
    repo: &Repository,
    name: &str,
    dest: &Path,
) -> Result<FetchOutcome, ArchiveError> {
    let name = WalFileName::parse(name)?;
    let Some(plain) = repo.get_wal(&name).await? else {
        return Ok(FetchOutcome::NotFound);
    };
    repo.check_wal(&name, &plain)
        .map_err(|source| ArchiveError::Invalid {
            name: name.to_string(),
            location: repo.storage().to_string(),
            source,
        })?;
    write_atomically(dest, &plain, false)?;
    Ok(FetchOutcome::Restored {
        bytes: plain.len() as u64,
    })
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
