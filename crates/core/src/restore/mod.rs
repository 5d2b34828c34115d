//! Restores a base backup into a new data directory and sets up point-in-time recovery.
//!
//! The backup is chosen for the target ([`target`]), the target is checked against the
//! recoverable window, then bundles are downloaded and unpacked in parallel; every piece of every
//! file is checked against its SHA-256 as it is written, files are fsynced, and only then are
//! `recovery.signal` and the recovery settings (with a `restore_command` calling
//! `pgvault-archive fetch` with the same configuration) written. A non-empty target directory is
//! refused: a restore never overwrites anything.

pub mod target;
mod unpack;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;

use crate::config::Config;
use crate::progress::Progress;
use crate::repository::catalog::FileEntry;
use crate::repository::{layout, BackupCatalog, Repository, RepositoryError};
use crate::storage::StorageError;
use crate::wal::WalKind;

pub use target::{ArchiveReach, Target, TargetAction, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{path} is not empty: restore only writes into a new or empty directory, so nothing can be overwritten; pick another directory or move this one away")]
    NotEmpty { path: PathBuf },
    #[error("tablespace {oid} would be restored into {path}, which is not empty (the original cluster may still be using it); nothing was written. Restore it elsewhere with --tablespace-map {original}=NEW_DIR, or move {path} away")]
    TablespaceNotEmpty { oid: String, original: String, path: PathBuf },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("tablespace mapping '{0}': expected OLD=NEW, with OLD a tablespace OID or its original location and NEW an absolute path")]
    BadMapping(String),
    #[error("tablespace mapping {0}: the backup has no tablespace with that OID or location")]
    UnknownTablespace(String),
    #[error("{0}")]
    Unpack(#[from] unpack::UnpackError),
    #[error("internal: {0}")]
    Internal(String),
}

/// What to restore and how.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub pgdata: PathBuf,
    /// A backup id, `latest`, or `None` to choose by target.
    pub backup: Option<String>,
    pub target: Target,
    pub action: TargetAction,
    /// `latest`, `current` or a timeline id.
    pub timeline: Option<String>,
    /// `OLD=NEW`, OLD being a tablespace OID or original location.
    pub tablespace_map: Vec<String>,
    pub parallel: usize,
    /// Path to `pgvault-archive` for `restore_command`.
    pub archive_command: PathBuf,
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct RestoreSummary {
    pub backup_id: String,
    pub files: usize,
    pub bytes: u64,
    pub tablespaces: Vec<(u32, PathBuf)>,
}

/// The archive's reach (newest WAL time and end), for the recoverable window.
pub async fn archive_reach(repo: &Repository) -> Result<ArchiveReach, RepositoryError> {
    let seg = repo.cluster().wal_segment_size;
    let mut reach = ArchiveReach::default();
    for (name, info) in repo.list_wal().await? {
        if matches!(name.kind, WalKind::Segment | WalKind::Partial) {
            let end = crate::lsn::Lsn(name.start_lsn(seg).0 + seg);
            reach.newest_wal_end = Some(reach.newest_wal_end.map_or(end, |e| e.max(end)));
            reach.newest_wal_time = Some(reach.newest_wal_time.map_or(info.last_modified, |t| t.max(info.last_modified)));
        }
    }
    Ok(reach)
}

fn ensure_empty_dir(path: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(path) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(RestoreError::NotEmpty { path: path.to_path_buf() });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RestoreError::Create { path: path.to_path_buf(), source }),
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), RestoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| RestoreError::Create { path: path.to_path_buf(), source })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| RestoreError::Create { path: path.to_path_buf(), source })
}

/// Where each tablespace goes: its original location unless mapped.
fn tablespace_targets(cat: &BackupCatalog, mappings: &[String]) -> Result<HashMap<u32, PathBuf>, RestoreError> {
    let mut out: HashMap<u32, PathBuf> = cat.tablespaces.iter().map(|t| (t.oid, PathBuf::from(&t.location))).collect();
    for m in mappings {
        let (old, new) = m.split_once('=').ok_or_else(|| RestoreError::BadMapping(m.clone()))?;
        let new = PathBuf::from(new);
        if !new.is_absolute() {
            return Err(RestoreError::BadMapping(m.clone()));
        }
        let ts = cat
            .tablespaces
            .iter()
            .find(|t| t.oid.to_string() == old || t.location.trim_end_matches('/') == old.trim_end_matches('/'))
            .ok_or_else(|| RestoreError::UnknownTablespace(m.clone()))?;
        out.insert(ts.oid, new);
    }
    Ok(out)
}

/// Maps a catalog path to where it is written.
pub(crate) fn destination(pgdata: &Path, spaces: &HashMap<u32, PathBuf>, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("pg_tblspc/") {
        if let Some((oid, inner)) = rest.split_once('/') {
            if let Some(loc) = oid.parse::<u32>().ok().and_then(|o| spaces.get(&o)) {
                return loc.join(inner);
            }
        }
    }
    pgdata.join(path)
}

fn quote_conf(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Restores into `req.pgdata`.
pub async fn run(config: &Config, repo: &Repository, req: &RestoreRequest, progress: Arc<dyn Progress>) -> Result<RestoreSummary, RestoreError> {
    let backups = repo.list_backups().await?;
    let reach = archive_reach(repo).await?;
    let cat = target::choose(&backups, req.backup.as_deref(), &req.target, &reach)?.clone();
    let spaces = tablespace_targets(&cat, &req.tablespace_map)?;

    ensure_empty_dir(&req.pgdata)?;
    for (oid, loc) in &spaces {
        ensure_empty_dir(loc).map_err(|e| match e {
            RestoreError::NotEmpty { path } => RestoreError::TablespaceNotEmpty {
                oid: oid.to_string(),
                original: cat.tablespaces.iter().find(|t| t.oid == *oid).map(|t| t.location.clone()).unwrap_or_else(|| path.display().to_string()),
                path,
            },
            other => other,
        })?;
    }
    tracing::info!(backup = %cat.id, "restoring");

    // Skeleton: data directory, tablespace locations and links, directories, empty files.
    mkdir(&req.pgdata, 0o700)?;
    for (oid, loc) in &spaces {
        mkdir(loc, 0o700)?;
        let link = req.pgdata.join("pg_tblspc").join(oid.to_string());
        mkdir(&req.pgdata.join("pg_tblspc"), 0o700)?;
        if link.symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(&link);
        }
        std::os::unix::fs::symlink(loc, &link).map_err(|source| RestoreError::Create { path: link.clone(), source })?;
    }
    for d in &cat.directories {
        if d.path.starts_with("pg_tblspc/") && d.path.matches('/').count() == 1 {
            continue; // the tablespace link itself
        }
        mkdir(&destination(&req.pgdata, &spaces, &d.path), (d.mode & 0o777) | 0o700)?;
    }
    for l in &cat.symlinks {
        // Tablespace links were made above; any other link is restored as it was.
        if l.path.starts_with("pg_tblspc/") {
            continue;
        }
        let p = req.pgdata.join(&l.path);
        std::os::unix::fs::symlink(&l.target, &p).map_err(|source| RestoreError::Create { path: p.clone(), source })?;
    }

    progress.total(cat.size);
    progress.phase("restoring files");
    let files: Arc<Vec<FileEntry>> = Arc::new(cat.files.clone());
    let dests: Arc<Vec<PathBuf>> = Arc::new(files.iter().map(|f| destination(&req.pgdata, &spaces, &f.path)).collect());
    unpack::unpack_all(repo, &cat, files.clone(), dests.clone(), req.parallel.max(1), progress.clone()).await?;

    // Modes and times, once all pieces are in place.
    let (files2, dests2) = (files.clone(), dests.clone());
    tokio::task::spawn_blocking(move || -> Result<(), RestoreError> {
        for (f, d) in files2.iter().zip(dests2.iter()) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(d)
                .map_err(|source| RestoreError::Create { path: d.clone(), source })?;
            let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.mtime.max(0) as u64);
            let _ = file.set_times(std::fs::FileTimes::new().set_modified(mtime).set_accessed(mtime));
            file.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o777))
                .map_err(|source| RestoreError::Create { path: d.clone(), source })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| RestoreError::Internal(e.to_string()))??;

    // PostgreSQL's manifest beside the data, as pg_basebackup leaves it, for pg_verifybackup.
    if let Ok(manifest) = repo.get_sealed(&layout::manifest_key(&cat.id)).await {
        write_file(&req.pgdata.join("backup_manifest"), &manifest, 0o600)?;
    }
    write_recovery_settings(config, &cat, req)?;
    chown_if_root(&cat, &req.pgdata, &spaces)?;
    sync_tree(&req.pgdata)?;
    for loc in spaces.values() {
        sync_tree(loc)?;
    }
    progress.finish();
    Ok(RestoreSummary {
        backup_id: cat.id.clone(),
        files: cat.files.len(),
        bytes: cat.size,
        tablespaces: spaces.into_iter().collect(),
    })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), RestoreError> {
    let err = |source| RestoreError::Create { path: path.to_path_buf(), source };
    let mut f = std::fs::File::create(path).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(err)?;
    f.sync_all().map_err(err)
}

/// `recovery.signal` plus the recovery settings appended to `postgresql.auto.conf`.
fn write_recovery_settings(config: &Config, cat: &BackupCatalog, req: &RestoreRequest) -> Result<(), RestoreError> {
    let restore_command = format!(
        "{} --config {} fetch %f %p",
        shell_quote(&req.archive_command.display().to_string()),
        shell_quote(&config.source.display().to_string())
    );
    let mut s = format!(
        "\n# Recovery settings written by pgvault restore of backup {} at {}.\n# Remove them (and recovery.signal) only if you know why.\nrestore_command = {}\n",
        cat.id,
        Utc::now().to_rfc3339(),
        quote_conf(&restore_command)
    );
    let mut has_target = true;
    match &req.target {
        Target::End => has_target = false,
        Target::Immediate => s.push_str("recovery_target = 'immediate'\n"),
        Target::Time(t) => {
            let utc = t.with_timezone(&Utc);
            s.push_str(&format!("recovery_target_time = {}\n", quote_conf(&utc.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())))
        }
        Target::Lsn(l) => s.push_str(&format!("recovery_target_lsn = '{l}'\n")),
        Target::Xid(x) => s.push_str(&format!("recovery_target_xid = '{x}'\n")),
        Target::Name(n) => s.push_str(&format!("recovery_target_name = {}\n", quote_conf(n))),
    }
    if has_target {
        s.push_str(&format!("recovery_target_action = '{}'\n", req.action.as_str()));
    }
    s.push_str(&format!("recovery_target_timeline = {}\n", quote_conf(req.timeline.as_deref().unwrap_or("latest"))));
    let auto = req.pgdata.join("postgresql.auto.conf");
    let mut existing = std::fs::read(&auto).unwrap_or_default();
    existing.extend_from_slice(s.as_bytes());
    write_file(&auto, &existing, 0o600)?;
    write_file(&req.pgdata.join("recovery.signal"), b"", 0o600)
}

fn shell_quote(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,".contains(&b)) {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$").replace('`', "\\`"))
    }
}

/// Run as root, give the restored files to the cluster's owner recorded in the backup.
fn chown_if_root(cat: &BackupCatalog, pgdata: &Path, spaces: &HashMap<u32, PathBuf>) -> Result<(), RestoreError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let (Some(uid), Some(gid)) = (cat.owner_uid, cat.owner_gid) else { return Ok(()) };
    let mut roots: Vec<&Path> = vec![pgdata];
    roots.extend(spaces.values().map(|p| p.as_path()));
    for root in roots {
        chown_tree(root, uid, gid)?;
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), RestoreError> {
    let err = |source| RestoreError::Create { path: path.to_path_buf(), source };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(err)?;
    let meta = path.symlink_metadata().map_err(err)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path).map_err(err)? {
            chown_tree(&e.map_err(err)?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// fsyncs every directory of the restored tree (file data was synced as it was written).
fn sync_tree(path: &Path) -> Result<(), RestoreError> {
    let err = |source| RestoreError::Create { path: path.to_path_buf(), source };
    let meta = path.symlink_metadata().map_err(err)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path).map_err(err)? {
            let p = e.map_err(err)?.path();
            if p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
                sync_tree(&p)?;
            }
        }
        std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(err)?;
    }
    Ok(())
}
