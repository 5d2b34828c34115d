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

use bytes::Bytes;

use crate::format::{self, Codec, FormatError};
use crate::repository::{layout, Repository, RepositoryError};
use crate::storage::PutOutcome;
use crate::wal::{self, WalError, WalFileName};

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
    #[error("archived {name} in {location} fails its check after decryption: {source}")]
    Invalid { name: String, location: String, source: WalError },
}

/// What [`push_prepared`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Stored { stored_bytes: u64 },
    /// The same content was already archived (a retry after a crash, or a second pusher).
    AlreadyArchived,
    /// An unreadable (torn or corrupted) object was under this name and was replaced.
    Repaired,
}

/// A WAL file read from disk and compressed, waiting for the repository's key to be sealed.
/// Preparing needs only the configuration, so `archive_command` compresses while the repository
/// opens (network round trip and the memory-hard key derivation), on another core.
pub struct PreparedWal {
    name: WalFileName,
    path: PathBuf,
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
    let data = std::fs::read(path).map_err(|source| ArchiveError::Read { path: path.to_path_buf(), source })?;
    let compressed = format::compress_for_seal(&data, codec)
        .map_err(|source| RepositoryError::Object { location: "(new object)".into(), source })?;
    Ok(PreparedWal { name, path: path.to_path_buf(), data, compressed, codec: codec.clone() })
}

/// Stores a prepared WAL file: checks it belongs to the repository's cluster, seals it and
/// writes it create-if-absent.
pub async fn push_prepared(repo: &Repository, wal: PreparedWal) -> Result<PushOutcome, ArchiveError> {
    let PreparedWal { name, path, data, compressed, codec } = wal;
    let cluster = repo.cluster();
    if name.has_page_header() {
        wal::check_segment(&name, &data, cluster.system_identifier, cluster.wal_segment_size, cluster.major())?;
    }
    let sealed = format::seal_precompressed(&data, compressed.as_deref(), &codec, repo.key())
        .map_err(|source| RepositoryError::Object { location: path.display().to_string(), source })?;
    let sealed = Bytes::from(sealed);
    let stored_bytes = sealed.len() as u64;
    let key = layout::wal_key(&name);
    let storage = repo.storage();
    match storage.put_if_absent(&key, sealed.clone()).await? {
        PutOutcome::Created => Ok(PushOutcome::Stored { stored_bytes }),
        PutOutcome::AlreadyExists => {
            let existing = storage.get(&key).await?;
            match repo.unseal(&key, &existing) {
                Ok(plain) if plain == data => Ok(PushOutcome::AlreadyArchived),
                Ok(_) => Err(ArchiveError::DifferentContent { name: name.to_string(), location: storage.to_string() }),
                Err(RepositoryError::Object { source, .. })
                    if matches!(source, FormatError::Corrupt { .. } | FormatError::Truncated { .. }) =>
                {
                    // A torn write (crash between rename and fsync on a filesystem that lost the
                    // data) leaves an object that cannot be opened; it never held WAL anyone could
                    // use, so storing the real content over it loses nothing.
                    tracing::warn!(wal = %name, "replacing an unreadable archived object");
                    storage.put(&key, sealed).await?;
                    Ok(PushOutcome::Repaired)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Result of `fetch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    Restored { bytes: u64 },
    /// Not in the repository: the normal end of the archive for recovery.
    NotFound,
}

/// Restores one WAL file `name` (`%f`) to `dest` (`%p`), atomically.
pub async fn fetch(repo: &Repository, name: &str, dest: &Path) -> Result<FetchOutcome, ArchiveError> {
    let name = WalFileName::parse(name)?;
    let key = layout::wal_key(&name);
    let raw = match repo.storage().get_opt(&key).await? {
        Some(raw) => raw,
        None => return Ok(FetchOutcome::NotFound),
    };
    let plain = repo.unseal(&key, &raw)?;
    if name.has_page_header() {
        let c = repo.cluster();
        wal::check_segment(&name, &plain, c.system_identifier, c.wal_segment_size, c.major()).map_err(|source| {
            ArchiveError::Invalid { name: name.to_string(), location: repo.storage().to_string(), source }
        })?;
    }
    write_atomically(dest, &plain, false)?;
    Ok(FetchOutcome::Restored { bytes: plain.len() as u64 })
}

/// Writes `data` to a temporary name beside `dest` and renames it into place, so a reader never
/// sees a half-written file. With `durable`, the data and the directory entry are fsynced.
pub fn write_atomically(dest: &Path, data: &[u8], durable: bool) -> Result<(), ArchiveError> {
    let err = |source| ArchiveError::Write { path: dest.to_path_buf(), source };
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
