//! Carrying out a [`RestorePlan`] so that a kill at any instant leaves a directory PostgreSQL
//! refuses to start and a re-run can finish.
//!
//! Order: the marker (fsynced, with the data directory and its parent); on a re-run, the
//! interrupted restore's files removed (`global/pg_control` first); directories, links and files;
//! the recovery settings; modes, times and ownership; everything made durable at once (a
//! `syncfs` of each data or tablespace directory's file system, and an fsync of each one's
//! parent); then `global/pg_control` renamed
//! into place and synced; then the marker removed. Until that rename the directory has no
//! `pg_control`, so PostgreSQL will not start on a half-restored directory.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use super::blockcrc::BlockCrcs;
use super::conf::RecoveryConf;
use super::conf::RestoreType;
use super::marker::MARKER;
use super::paths::{self, Dest};
use super::plan::RestorePlan;
use super::{failpoint, unpack, RestoreError, RestoreSummary};
use crate::config::Config;
use crate::progress::Progress;
use crate::repository::Repository;

/// Files restore itself writes into the data directory (besides the catalog's).
const EXTRAS: [&str; 5] = [
    "backup_manifest",
    "recovery.signal",
    "standby.signal",
    "postgresql.auto.conf.pgvault-tmp",
    "pgvault_restore.json.tmp",
];

fn pgdata_dest(plan: &RestorePlan, rel: &str) -> Result<Dest, RestoreError> {
    Ok(Dest::new(Arc::new(plan.pgdata.clone()), rel)?)
}

fn create_err(path: &Path) -> impl Fn(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Create {
        path: path.to_path_buf(),
        source,
    }
}

/// Carries out `plan`.
pub async fn execute(
    config: &Config,
    repo: &Repository,
    plan: &RestorePlan,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary, RestoreError> {
    // The same allocator bounds as a backup: freed buffers go back to the system.
    crate::backup::memory::limit_allocator_retention();
    let cat = &plan.catalog;
    std::fs::create_dir_all(&plan.pgdata).map_err(create_err(&plan.pgdata))?;
    std::fs::set_permissions(&plan.pgdata, std::fs::Permissions::from_mode(0o700)).map_err(create_err(&plan.pgdata))?;
    if let Some(old) = &plan.resume {
        tracing::warn!(backup = %cat.id, started = %old.started_at, pid = old.pid, host = %old.host, "resuming an interrupted restore of the same backup: removing what it wrote and starting over");
        remove_previous(plan)?;
    }
    write_marker(plan)?;
    failpoint::hit("after-marker");

    make_skeleton(plan)?;
    failpoint::hit("after-skeleton");

    progress.total(cat.size);
    progress.phase("restoring files");
    let files = Arc::new(cat.files.clone());
    let dests = Arc::new(plan.files.clone());
    let counted = failpoint::counting(progress.clone());
    let parallel = plan.request.parallel.max(1);
    let started = std::time::Instant::now();
    let crcs = match &plan.chain {
        None => {
            unpack::unpack_all(repo, cat, files, dests, parallel, counted).await?;
            None
        }
        Some(chain) => {
            let sizes = cat.files.iter().map(|f| f.size).collect();
            let ids = chain.ids();
            tracing::info!(chain = %ids.join(" <- "), "restoring an incremental chain in one pass");
            let crcs = Arc::new(reconstructed_crcs(plan, chain));
            let sources = &chain.combined.sources;
            unpack::unpack_chain(repo, &ids, sources, sizes, dests, crcs.clone(), parallel, counted).await?;
            Some(crcs)
        }
    };
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "files written");
    failpoint::hit("after-files");

    // PostgreSQL's manifest beside the data, as pg_basebackup leaves it, for pg_verifybackup.
    // The data is already verified piece by piece, so a manifest that cannot be read costs only
    // that cross-check: say so instead of failing the restore.
    let manifest = match repo.get_manifest(&cat.id).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(backup = %cat.id, "backup_manifest not restored ({e}); pg_verifybackup cannot be run on this copy");
            None
        }
    };
    let started = std::time::Instant::now();
    if let (Some(chain), Some(crcs)) = (&plan.chain, &crcs) {
        finish_chain(plan, chain, crcs, manifest.as_deref())?;
    } else if let Some(manifest) = manifest {
        write_new(&pgdata_dest(plan, "backup_manifest")?, &manifest)?;
    }
    write_recovery_settings(config, plan)?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "manifest and recovery settings written"
    );
    failpoint::hit("after-settings");

    let started = std::time::Instant::now();
    let plan2 = plan.clone();
    tokio::task::spawn_blocking(move || finish_tree(&plan2))
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))??;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "modes, owners and fsyncs done"
    );
    failpoint::hit("after-modes");

    failpoint::hit("before-pg-control");
    paths::rename_synced(&plan.pg_control, "pg_control")?;
    failpoint::hit("after-pg-control");
    paths::remove(&pgdata_dest(plan, MARKER)?)?;
    sync_dir(&plan.pgdata)?;
    progress.finish();
    Ok(RestoreSummary {
        backup_id: cat.id.clone(),
        files: cat.files.len(),
        bytes: cat.size,
        tablespaces: plan.tablespaces.clone(),
        resumed: plan.resume.as_ref().map(|m| m.started_at),
    })
}

/// The block CRC record of a chain restore: the output files rebuilt from incremental files.
fn reconstructed_crcs(plan: &RestorePlan, chain: &super::combined::ChainPlan) -> BlockCrcs {
    let outputs = chain.links[0].files.iter().enumerate();
    BlockCrcs::new(
        outputs
            .filter(|(_, f)| f.incremental.is_some())
            .filter_map(|(i, _)| plan.catalog.files.get(i).map(|f| (i, f.size))),
    )
}

/// After a chain's files are written: `backup_label` without `INCREMENTAL FROM`, and the
/// manifest of the combined result (reconstructed files' CRCs from the blocks as they were
/// written; any other changed file read back).
fn finish_chain(
    plan: &RestorePlan,
    chain: &super::combined::ChainPlan,
    crcs: &BlockCrcs,
    manifest: Option<&[u8]>,
) -> Result<(), RestoreError> {
    let label_at = plan.catalog.files.iter().position(|f| f.path == "backup_label");
    if let Some(i) = label_at {
        super::combined::fix_label(&plan.files[i])?;
    }
    let Some(manifest) = manifest else {
        return Ok(());
    };
    let mut changed = std::collections::HashMap::new();
    for (i, f) in chain.links[0].files.iter().enumerate() {
        if f.incremental.is_some() || f.path == "backup_label" {
            let sum = match crcs.file_crc(i) {
                Some(crc) => (plan.catalog.files[i].size, crc),
                _ => super::combined::checksum(&plan.files[i])?,
            };
            changed.insert(plan.catalog.files[i].path.clone(), sum);
        }
    }
    let combined = super::combined::combined_manifest(manifest, &changed)?;
    write_new(&pgdata_dest(plan, "backup_manifest")?, &combined)
}

/// Removes what an interrupted restore of the same backup wrote: `global/pg_control` first (and
/// synced), so the directory never starts while it is being cleaned, then the catalog's files,
/// restore's own files and the links it made. Directories stay (they are the catalog's).
fn remove_previous(plan: &RestorePlan) -> Result<(), RestoreError> {
    let control = plan.pg_control.with_name("pg_control")?;
    paths::remove(&control)?;
    if let Ok(dir) = paths::open_dir(&control.parent_dir()?) {
        dir.sync_all().map_err(create_err(&control.full()))?;
    }
    failpoint::hit("during-cleanup");
    for d in &plan.files {
        paths::remove(d)?;
    }
    for name in EXTRAS.iter().chain(["postgresql.auto.conf"].iter()) {
        paths::remove(&pgdata_dest(plan, name)?)?;
    }
    for (oid, _) in &plan.tablespaces {
        paths::remove(&pgdata_dest(plan, &format!("pg_tblspc/{oid}"))?)?;
    }
    for (old, _) in &plan.links {
        paths::remove(&pgdata_dest(plan, old)?)?;
    }
    Ok(())
}

/// Writes the marker under a temporary name, fsyncs it, renames it into place and fsyncs the data
/// directory and its parent.
fn write_marker(plan: &RestorePlan) -> Result<(), RestoreError> {
    let json = serde_json::to_vec_pretty(&plan.marker()).map_err(|e| RestoreError::Internal(e.to_string()))?;
    let tmp = pgdata_dest(plan, "pgvault_restore.json.tmp")?;
    paths::remove(&tmp)?;
    write_new(&tmp, &json)?;
    paths::rename_synced(&tmp, MARKER)?;
    sync_parent(&plan.pgdata)
}

/// Data directory root, tablespace and link destinations and their links, catalog directories,
/// and the backup's other links as plain directories.
fn make_skeleton(plan: &RestorePlan) -> Result<(), RestoreError> {
    let locs = plan
        .tablespaces
        .iter()
        .map(|(_, p)| p)
        .chain(plan.links.iter().map(|(_, p)| p));
    for loc in locs {
        std::fs::create_dir_all(loc).map_err(create_err(loc))?;
        std::fs::set_permissions(loc, std::fs::Permissions::from_mode(0o700)).map_err(create_err(loc))?;
    }
    for (oid, loc) in &plan.tablespaces {
        paths::symlink(&pgdata_dest(plan, &format!("pg_tblspc/{oid}"))?, loc)?;
    }
    for (old, loc) in &plan.links {
        paths::symlink(&pgdata_dest(plan, old)?, loc)?;
    }
    for (d, _) in &plan.directories {
        paths::mkdir_all(d)?;
    }
    for d in &plan.plain_links {
        paths::mkdir_all(d)?;
    }
    Ok(())
}

/// Creates `d` (which must not exist) with `data`, 0600, fsynced.
fn write_new(d: &Dest, data: &[u8]) -> Result<(), RestoreError> {
    let mut f = paths::create_file(d)?;
    f.write_all(data).map_err(create_err(&d.full()))?;
    f.sync_all().map_err(create_err(&d.full()))
}

/// The signal file, and `postgresql.auto.conf` with earlier recovery settings commented out and
/// the new ones appended (replaced atomically). An unreadable file is an error, never "empty".
fn write_recovery_settings(config: &Config, plan: &RestorePlan) -> Result<(), RestoreError> {
    let req = &plan.request;
    let auto = pgdata_dest(plan, "postgresql.auto.conf")?;
    let existing = match paths::open_read(&auto)? {
        None => String::new(),
        Some(mut f) => {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).map_err(|source| RestoreError::AutoConf {
                path: auto.full(),
                source,
            })?;
            String::from_utf8(bytes).map_err(|_| super::conf::ConfError::NotUtf8)?
        }
    };
    // The timeline the plan was checked against, as a number, so that a timeline created after
    // the plan cannot redirect recovery; a standby keeps following `latest` (or what was asked).
    let timeline = match (&plan.recovery, req.kind) {
        (Some(choice), RestoreType::Default) => Some(choice.target_tli.to_string()),
        // A standby asked for no timeline stays on its own: following `latest` makes PostgreSQL
        // probe for the next timeline's history file on every retry, and while the store is down
        // that probe must stop recovery (answering "missing" could make a promotion reuse a
        // timeline id that exists), so `latest` would stop the standby at every outage.
        (_, RestoreType::Standby) => Some(req.timeline.clone().unwrap_or_else(|| "current".into())),
        _ => req.timeline.clone(),
    };
    let conf = RecoveryConf {
        backup_id: &plan.catalog.id,
        now: Utc::now(),
        archive_command: &req.archive_command,
        config: &config.source,
        target: &req.target,
        action: req.action,
        timeline: timeline.as_deref(),
        kind: req.kind,
        archive_mode: req.archive_mode,
    };
    let text = conf.apply(&existing)?;
    let tmp = pgdata_dest(plan, "postgresql.auto.conf.pgvault-tmp")?;
    paths::remove(&tmp)?;
    write_new(&tmp, text.as_bytes())?;
    paths::rename_synced(&tmp, "postgresql.auto.conf")?;
    write_new(&pgdata_dest(plan, req.kind.signal_file())?, b"")
}

/// Modes, times and ownership of everything restored, then all of it made durable (a syncfs of
/// each root's file system, an fsync of each root's parent): all before `pg_control` is renamed
/// into place.
fn finish_tree(plan: &RestorePlan) -> Result<(), RestoreError> {
    let owner = if nix::unistd::geteuid().is_root() {
        plan.catalog.owner_uid.zip(plan.catalog.owner_gid)
    } else {
        None
    };
    let chown = |f: &std::fs::File, path: &Path| -> Result<(), RestoreError> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(f, Some(uid), Some(gid)).map_err(create_err(path))?;
        }
        Ok(())
    };
    for (entry, d) in plan.catalog.files.iter().zip(plan.files.iter()) {
        let f = paths::open_nofollow(d)?;
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.mtime.max(0) as u64);
        let _ = f.set_times(std::fs::FileTimes::new().set_modified(mtime).set_accessed(mtime));
        f.set_permissions(std::fs::Permissions::from_mode(entry.mode & 0o777))
            .map_err(create_err(&d.full()))?;
        chown(&f, &d.full())?;
    }
    for name in [
        "backup_manifest",
        "postgresql.auto.conf",
        plan.request.kind.signal_file(),
        MARKER,
    ] {
        let d = pgdata_dest(plan, name)?;
        if let Ok(f) = paths::open_nofollow(&d) {
            chown(&f, &d.full())?;
        }
    }
    let mut dirs: Vec<(&Dest, u32)> = plan.directories.iter().map(|(d, m)| (d, (m & 0o777) | 0o700)).collect();
    dirs.extend(plan.plain_links.iter().map(|d| (d, 0o700)));
    for (d, mode) in dirs {
        let f = paths::open_dir(d)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(create_err(&d.full()))?;
        chown(&f, &d.full())?;
    }
    if let Some((uid, gid)) = owner {
        let links = plan
            .tablespaces
            .iter()
            .map(|(oid, _)| format!("pg_tblspc/{oid}"))
            .chain(plan.links.iter().map(|(o, _)| o.clone()));
        for l in links {
            let p = plan.pgdata.join(l);
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(create_err(&p))?;
        }
    }
    for root in plan.roots() {
        let f = paths::open_root_dir(&root)?;
        chown(&f, &root)?;
        // One syncfs(2) per root makes every file and directory restored under it durable: a
        // single journal commit instead of an fsync per file (thousands in a small cluster,
        // seconds on a disk with slow flushes). Linux reports writeback errors of the whole
        // file system through it (5.8 and later).
        nix::unistd::syncfs(f.as_raw_fd()).map_err(|e| create_err(&root)(std::io::Error::from(e)))?;
        sync_parent(&root)?;
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), RestoreError> {
    paths::open_root_dir(path)?.sync_all().map_err(create_err(path))
}

fn sync_parent(path: &Path) -> Result<(), RestoreError> {
    match path.parent() {
        Some(p) => sync_dir(p),
        None => Ok(()),
    }
}
