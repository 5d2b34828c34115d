//! Full base backups over the replication protocol.
//!
//! `BASE_BACKUP` streams tar archives over one connection. An async task reads the stream and
//! passes it through a bounded channel to the packing thread ([`packer`]), which splits it into
//! files, hashes them and feeds [`bundle`]s that are sealed and uploaded while the stream is still
//! arriving. Only when every bundle is stored, PostgreSQL's manifest agrees with what was
//! received, and the WAL that makes the backup consistent is in the repository (or inside the
//! backup) is the catalog written, which is what makes the backup exist.

pub mod bundle;
pub mod incremental;
pub mod manifest;
pub mod memory;
pub mod packer;
mod parent;
mod walwait;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::lsn::{Lsn, TimelineId};
use crate::progress::Progress;
use crate::protocol::{BackupEvent, BaseBackupOptions, Connection, ProtocolError};
use crate::repository::catalog::{self, BackupCatalog, BackupKind, TablespaceEntry};
use crate::repository::lock::{LockError, LockGuard};
use crate::repository::{Repository, RepositoryError};
use crate::server::{self, ServerError};
use crate::storage::StorageError;
use crate::survey::SurveyError;
use crate::timeline::BackupPoint;
use crate::wal::WalFileName;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("base backup stream from {target}: {source}")]
    Stream { target: String, source: ProtocolError },
    #[error("packing the backup: {0}")]
    Pack(#[from] packer::PackError),
    #[error("{0}")]
    Manifest(#[from] manifest::ManifestError),
    #[error("the server sent no backup_manifest although one was requested")]
    NoManifest,
    #[error("{0}")]
    NotArchiving(String),
    #[error("WAL segment {segment} (needed to make backup {id} consistent) did not reach the repository within {waited}s. {status}. Fix archive_command (it should be `pgvault-archive push %p` with this repository's configuration), or raise [backup] archive_wait_timeout, or take the backup with --include-wal. The unfinished backup was removed.")]
    WalTimeout {
        id: String,
        segment: String,
        waited: u64,
        status: String,
    },
    #[error(transparent)]
    Survey(#[from] SurveyError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("a backup with id {0} already exists; wait a second and run the backup again")]
    IdTaken(String),
    #[error("an {kind} backup needs PostgreSQL 17 or later (block-level incremental backups); this server is PostgreSQL {version}. Take full backups (--type full)")]
    IncrementalUnsupported { kind: String, version: String },
    #[error("an {kind} backup cannot be taken: {why} ([backup] incremental_fallback = \"fail\")")]
    NoIncremental { kind: String, why: String },
    /// The server refused the incremental BASE_BACKUP before sending anything.
    #[error("the server refused the incremental backup: {0}")]
    IncrementalRefused(String),
    #[error("{key} {why} (see docs/CONFIGURATION.md)")]
    Setting { key: &'static str, why: String },
    #[error("internal: {0}")]
    Internal(String),
}

/// Size of the pieces of tar stream handed from the network task to the packing thread.
pub const FORWARD_CHUNK: usize = 512 * 1024;
/// Pieces in flight between the network task and the packing thread: enough to ride out the
/// packer's pauses (a bundle boundary, a full upload channel) while the server keeps sending.
pub const FORWARD_DEPTH: usize = 8;

/// Choices for one backup run.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub include_wal: bool,
    pub archive_wait: Duration,
    pub label: Option<String>,
    pub fast_checkpoint: bool,
    pub bundle_size: u64,
    /// `full`, or `incr`/`diff` (PostgreSQL 17+).
    pub kind: BackupKind,
    pub incremental_fallback: incremental::IncrementalFallback,
    /// Parts of one bundle's upload in flight at once (`[backup] upload_parallel`).
    pub upload_parallel: usize,
}

impl BackupOptions {
    pub fn from_config(config: &Config) -> Self {
        BackupOptions {
            include_wal: config.backup.include_wal,
            archive_wait: Duration::from_secs(config.backup.archive_wait_timeout),
            label: None,
            fast_checkpoint: config.backup.fast_checkpoint,
            bundle_size: config.backup.bundle_size_mib * 1024 * 1024,
            kind: BackupKind::Full,
            incremental_fallback: config.backup.incremental_fallback,
            upload_parallel: config.backup.upload_parallel,
        }
    }
}

/// Whether `archive_command` visibly hands WAL to pgvault (directly or through `env`, `nice`…).
/// A wrapper script that calls pgvault-archive is not recognised; such backups then carry their
/// own WAL, which costs a little space and never safety.
fn archives_to_pgvault(archive_command: &str) -> bool {
    archive_command.contains("pgvault-archive")
}

/// Takes a full backup of the cluster in `config` into `repo`.
///
/// Unless `opts.include_wal`, the backup is complete only once the archiver has stored the WAL
/// that makes it consistent. When `archive_command` does not call pgvault-archive, that WAL would
/// never reach this repository, so the backup includes it instead (and says so in the log).
pub async fn run(
    config: &Config,
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupCatalog, BackupError> {
    if let Some((key, why)) = config.backup.check() {
        return Err(BackupError::Setting { key, why });
    }
    if opts.upload_parallel == 0 || opts.upload_parallel > 16 {
        let why = "must be between 1 and 16".to_string();
        return Err(BackupError::Setting {
            key: "backup.upload_parallel",
            why,
        });
    }
    memory::limit_allocator_retention();
    let budget = memory::BackupMemory::for_config(config);
    tracing::debug!(budget_mib = budget.total() >> 20, ?budget, "memory budget");
    // One backup at a time per repository (the lease survives a crash for at most its length).
    let lock = repo.lock(BACKUP_LOCK, LOCK_LEASE, "pgvault backup").await?;
    let result = run_locked(config, repo, opts, progress, &lock).await;
    if let Err(e) = lock.release().await {
        tracing::warn!("releasing the backup lock: {e}");
    }
    result
}

/// The repository lock a backup holds (the one lock shared with expire, delete, pin and copy;
/// see docs/FORMAT.md), and its lease (renewed every third of it).
const BACKUP_LOCK: &str = crate::retention::REPOSITORY_LOCK;
const LOCK_LEASE: Duration = Duration::from_secs(300);

async fn run_locked(
    config: &Config,
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
    lock: &LockGuard,
) -> Result<BackupCatalog, BackupError> {
    let target = server::describe(config);
    let mut repl = server::connect(config, true).await?;
    let (identity, _sys) = server::cluster_identity(&mut repl, config).await?;
    repo.check_cluster(&identity)?;
    let mut sql = server::connect(config, false).await?;

    let mut include_wal = opts.include_wal;
    if !include_wal {
        let status = server::archiver_status(&mut sql, config).await?;
        if status.archive_mode == "off" || status.archive_command.trim().is_empty() {
            return Err(BackupError::NotArchiving(format!(
                "PostgreSQL at {target} does not archive WAL ({status}), so this backup could never be restored. \
                 Set archive_mode = on and archive_command = 'pgvault-archive --config {} push %p' (archive_mode needs a restart), \
                 or take a self-contained backup with --include-wal.",
                config.source.display()
            )));
        }
        if !archives_to_pgvault(&status.archive_command) {
            // The WAL goes somewhere else (another tool, a wrapper script): waiting for it to show
            // up in this repository could only time out, and a backup without its WAL cannot be
            // restored. Carry the WAL inside the backup instead.
            tracing::warn!(
                archive_command = %status.archive_command,
                "archive_command does not call pgvault-archive; this backup includes its own WAL (self-contained) \
                 instead of waiting for the archive"
            );
            include_wal = true;
        }
    }
    let opts = &BackupOptions {
        include_wal,
        ..opts.clone()
    };

    // Times on the server's clock: recovery targets are compared with commit timestamps, which
    // the server writes with its own clock.
    let mut parent = parent::prepare(config, repo, opts, identity.pg_version_num, &mut sql).await?;
    let kind_of = |p: &Option<parent::Parent>| if p.is_some() { opts.kind } else { BackupKind::Full };
    let (mut id, mut start_time) = unused_id(repo, &mut sql, config, kind_of(&parent)).await?;
    let mut label = opts.label.clone().unwrap_or_else(|| format!("pgvault backup {id}"));
    tracing::info!(backup = %id, parent = parent.as_ref().map(|p| p.id.as_str()), "starting base backup");
    progress.phase("checkpoint");

    let bb = BaseBackupOptions {
        label: label.clone(),
        fast_checkpoint: opts.fast_checkpoint,
        manifest: true,
        progress: true,
        wal: opts.include_wal,
        wait_for_archive: false,
        max_rate_kb: None,
        // Tablespace links travel as tar symlinks; restore re-points them (and --tablespace-map).
        tablespace_map: false,
    };
    let conns = (&mut repl, &mut sql);
    let mut result = stream_backup(config, repo, &id, &bb, opts, parent.as_ref(), conns, progress.clone()).await;
    if let Err(BackupError::IncrementalRefused(why)) = &result {
        // Nothing was stored: the server refused before sending data. Fall back (or fail).
        parent = parent::fall_back(opts, why.clone())?;
        (id, start_time) = unused_id(repo, &mut sql, config, BackupKind::Full).await?;
        label = opts.label.clone().unwrap_or_else(|| format!("pgvault backup {id}"));
        let bb = BaseBackupOptions {
            label: label.clone(),
            ..bb
        };
        result = stream_backup(
            config,
            repo,
            &id,
            &bb,
            opts,
            None,
            (&mut repl, &mut sql),
            progress.clone(),
        )
        .await;
    }
    let streamed = match result {
        Ok(s) => s,
        Err(e) => {
            cleanup(repo, &id).await;
            return Err(e);
        }
    };
    let _ = repl.close().await;

    let snapshot = server::query_row(
        &mut sql,
        config,
        "reading the snapshot after the backup",
        "SELECT pg_current_snapshot()::text",
    )
    .await
    .ok()
    .and_then(|r| r.into_iter().next().flatten());

    let seg = repo.cluster().wal_segment_size;
    let start_wal = WalFileName::segment_for(streamed.start_tli, streamed.start_lsn, seg);
    let last_byte = Lsn(streamed.stop_lsn.0.saturating_sub(1).max(streamed.start_lsn.0));
    let stop_wal = WalFileName::segment_for(streamed.stop_tli, last_byte, seg);

    if !opts.include_wal {
        progress.phase("waiting for WAL archiving");
        let point = BackupPoint {
            id: id.clone(),
            start_tli: streamed.start_tli,
            start_lsn: streamed.start_lsn,
            stop_tli: streamed.stop_tli,
            stop_lsn: streamed.stop_lsn,
            stop_time: streamed.stop_time,
            wal_included: false,
        };
        if let Err(e) = walwait::wait_for_wal(repo, &id, &point, opts.archive_wait, &mut sql, config).await {
            cleanup(repo, &id).await;
            return Err(e);
        }
    }

    let manifest_sha256 = hex::encode(Sha256::digest(&streamed.manifest));
    let packed = streamed.packed;
    let kind = kind_of(&parent);
    let cat = BackupCatalog {
        catalog_version: if kind.is_incremental() {
            catalog::CATALOG_VERSION_INCREMENTAL
        } else {
            catalog::CATALOG_VERSION
        },
        id: id.clone(),
        label,
        kind,
        pgvault_version: env!("CARGO_PKG_VERSION").to_string(),
        system_identifier: identity.system_identifier,
        pg_version_num: identity.pg_version_num,
        timeline: streamed.start_tli,
        start_lsn: streamed.start_lsn,
        stop_lsn: streamed.stop_lsn,
        stop_timeline: streamed.stop_tli,
        start_wal: start_wal.to_string(),
        stop_wal: stop_wal.to_string(),
        start_time,
        stop_time: streamed.stop_time,
        wal_included: opts.include_wal,
        snapshot_after_stop: snapshot,
        size: packed.size,
        stored_size: packed.bundles.iter().map(|b| b.stored_size).sum(),
        compression: repo.compression_name().to_string(),
        encrypted: repo.is_encrypted(),
        owner_uid: packed.owner.map(|o| o.0),
        owner_gid: packed.owner.map(|o| o.1),
        tablespaces: streamed.tablespaces,
        bundles: packed.bundles,
        directories: packed.directories,
        symlinks: packed.symlinks,
        files: packed.files,
        manifest_sha256: Some(manifest_sha256),
        parent: parent.map(|p| p.id),
    };
    // A run that lost its lease (paused past it) must not publish a backup another run may be
    // writing beside.
    if let Err(e) = lock.check() {
        cleanup(repo, &id).await;
        return Err(e.into());
    }
    if let Err(e) = repo.put_catalog(&cat).await {
        cleanup(repo, &id).await;
        return Err(e.into());
    }
    progress.finish();
    tracing::info!(backup = %id, size = cat.size, stored = cat.stored_size, "backup complete");
    Ok(cat)
}

struct Streamed {
    packed: packer::Packed,
    manifest: Vec<u8>,
    start_lsn: Lsn,
    start_tli: TimelineId,
    stop_lsn: Lsn,
    stop_tli: TimelineId,
    stop_time: chrono::DateTime<Utc>,
    tablespaces: Vec<TablespaceEntry>,
}

/// An id for a backup starting now, on the server's clock, in a second no backup of any kind
/// holds yet. Ids name the second a backup started, and sorting them must give the order the
/// backups were taken (retention and chains rely on it), so a second holds one backup: `…F`
/// and `…D` of the same second would sort against their order. A backup that starts within the
/// second of the previous one waits for the next second (as pgBackRest does) instead of
/// failing; the repository lock keeps another backup from taking the second meanwhile.
async fn unused_id(
    repo: &Repository,
    sql: &mut Connection,
    config: &Config,
    kind: BackupKind,
) -> Result<(String, DateTime<Utc>), BackupError> {
    let mut attempt = 0;
    loop {
        let start_time = server::server_clock(sql, config).await?;
        let id = catalog::backup_id_of(start_time, kind);
        let mut taken = false;
        for other in [BackupKind::Full, BackupKind::Diff, BackupKind::Incr] {
            taken = taken || repo.catalog_exists(&catalog::backup_id_of(start_time, other)).await?;
        }
        if !taken {
            return Ok((id, start_time));
        }
        attempt += 1;
        if attempt == 3 {
            return Err(BackupError::IdTaken(id));
        }
        let to_next_second = 1_000 - u64::from(start_time.timestamp_subsec_millis().min(999));
        tokio::time::sleep(Duration::from_millis(to_next_second + 10)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream_backup(
    config: &Config,
    repo: &Repository,
    id: &str,
    bb: &BaseBackupOptions,
    opts: &BackupOptions,
    parent: Option<&parent::Parent>,
    (repl, sql): (&mut Connection, &mut Connection),
    progress: Arc<dyn Progress>,
) -> Result<Streamed, BackupError> {
    let target = server::describe(config);
    let stream_err = |source| BackupError::Stream {
        target: target.clone(),
        source,
    };
    let mut stream = match parent {
        None => repl.base_backup(bb).await.map_err(stream_err)?,
        Some(p) => match repl.incremental_base_backup(bb, &p.manifest).await {
            Ok(s) => s,
            Err(e @ ProtocolError::Server { .. }) => {
                return Err(BackupError::IncrementalRefused(format!("against parent {}: {e}", p.id)))
            }
            Err(e) => return Err(stream_err(e)),
        },
    };
    let start_lsn = stream.start_lsn;
    let start_tli = stream.start_timeline;
    let total: i64 = stream.tablespaces.iter().filter_map(|t| t.size_kb).sum();
    if total > 0 {
        progress.total(total as u64 * 1024);
    }
    progress.phase("streaming");
    let tablespaces: Vec<TablespaceEntry> = stream
        .tablespaces
        .iter()
        .filter_map(|t| {
            Some(TablespaceEntry {
                oid: t.oid?,
                location: t.location.clone()?,
            })
        })
        .collect();

    // At most FORWARD_DEPTH coalesced pieces (4 MiB) in flight between the network and the packer.
    let (tx, rx) = mpsc::channel(FORWARD_DEPTH);
    let rt = tokio::runtime::Handle::current();
    let writer = match parent {
        Some(_) => repo.bundle_writer_with(rt, id, opts.bundle_size, incremental::incremental_sealing),
        None => repo.bundle_writer(rt, id, opts.bundle_size),
    }
    .with_upload_parallel(opts.upload_parallel);
    let p = progress.clone();
    let packer = tokio::task::spawn_blocking(move || packer::pack(rx, writer, p.as_ref()));

    // Forward the stream to the packer; if the packer stops early its error is the one to report.
    // The server sends tar data in 32 KiB messages; they are coalesced into larger pieces so the
    // two threads hand over a few thousand buffers instead of one per message.
    let mut forward_err = None;
    let mut pending = BytesMut::with_capacity(FORWARD_CHUNK + 64 * 1024);
    loop {
        match stream.next().await {
            Ok(Some(BackupEvent::ArchiveData(data))) => {
                pending.extend_from_slice(&data);
                if pending.len() >= FORWARD_CHUNK {
                    if tx
                        .send(BackupEvent::ArchiveData(pending.split().freeze()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    pending.reserve(FORWARD_CHUNK + 64 * 1024);
                }
            }
            Ok(Some(ev)) => {
                if !pending.is_empty()
                    && tx
                        .send(BackupEvent::ArchiveData(pending.split().freeze()))
                        .await
                        .is_err()
                {
                    break;
                }
                if tx.send(ev).await.is_err() {
                    break;
                }
            }
            Ok(None) => {
                if !pending.is_empty() {
                    let _ = tx.send(BackupEvent::ArchiveData(pending.split().freeze())).await;
                }
                break;
            }
            Err(e) => {
                forward_err = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let packed = packer
        .await
        .map_err(|e| BackupError::Internal(format!("packing thread: {e}")))?;
    if let Some(e) = forward_err {
        return Err(stream_err(e));
    }
    let packed = packed?;
    let end = stream.finish().await.map_err(stream_err)?;
    // Read right after the server ended the backup: never earlier than the moment the backup
    // became consistent, so a target time at or after it can always start from this backup.
    let stop_time = server::server_clock(sql, config).await?;

    let manifest = packed.manifest.clone().ok_or(BackupError::NoManifest)?;
    let checked = manifest::check(&manifest, &packed.received)?;
    tracing::debug!(files = checked, "server manifest matches the received files");
    repo.put_manifest(id, &manifest).await?;
    Ok(Streamed {
        packed,
        manifest,
        start_lsn,
        start_tli,
        stop_lsn: end.stop_lsn,
        stop_tli: end.stop_timeline,
        stop_time,
        tablespaces,
    })
}

/// Removes what an unfinished backup stored (best effort). The catalog goes first: a catalog
/// whose write reported an error may still have landed, and while it exists the backup looks
/// complete; once it is gone the rest is invisible leftovers.
async fn cleanup(repo: &Repository, id: &str) {
    if let Err(e) = repo.delete_backup(id).await {
        tracing::warn!(backup = %id, "could not remove everything the unfinished backup stored ({e}); without a catalog it is invisible");
    }
}
