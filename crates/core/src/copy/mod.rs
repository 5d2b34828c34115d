//! `pgvault copy`: keeps a second repository (another disk, another bucket, another cloud) in
//! step with the first, for disaster recovery.
//!
//! A repository is only as safe as the one store it lives in; a copy in a second store survives
//! the loss of the first (a deleted bucket, a compromised account, a dead disk). This module
//! replicates every complete backup and every WAL object from a *source* repository to a
//! *target* repository, so that `pgvault restore` can read either.
//!
//! Design:
//! - **Same key, sealed bytes.** On the first copy the target's descriptor `pgvault.repo` is
//!   copied byte for byte from the source, so both repositories hold the same wrapped repository
//!   key (and the same repository id): the same passphrase opens both, and objects are copied as
//!   the sealed bytes they are, without being decrypted and re-encrypted. (The one field that
//!   describes the store rather than the repository, `conditional_create`, is probed on the
//!   target as `init` does, and rewritten when the target store differs.) A target that already holds another repository
//!   (another cluster, or another `init` of this cluster, hence another key) is refused.
//! - **Verified while streaming.** Every object is opened with the repository key and
//!   authenticated chunk by chunk as its bytes flow from the source to the target: bundles are
//!   checked piece by piece against the SHA-256s of their catalog, the manifest against the
//!   catalog's `manifest_sha256`, WAL segments against the cluster (page header, size). An object
//!   that fails is never completed in the target.
//! - **Resumable, never half-visible.** Objects are written atomically by [`Storage`]; a backup's
//!   `catalog` (whose presence *is* the backup, docs/FORMAT.md) is copied last, only once its
//!   bundles, its manifest and the WAL that makes it consistent are in the target. Running copy
//!   again copies only what the target lacks (objects already there with the right size are
//!   kept), so an interrupted copy resumes where it stopped.
//! - **Bounded memory.** Objects are streamed (`get_stream` → `upload`); only WAL objects of at
//!   most [`BUFFERED_OBJECT_LIMIT`] are held whole, to store them create-if-absent like `push`.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError};
use crate::format::{into_format_error, FormatError};
use crate::progress::{format_bytes, Progress};
use crate::repository::catalog::Piece;
use crate::repository::objects::ChannelReader;
use crate::repository::walk::{walk_bundle, WalkError};
use crate::repository::{
    layout, BackupCatalog, ClusterIdentity, ObjectSealing, RepoMeta, Repository, RepositoryError,
};
use crate::storage::{CreateMode, PutOutcome, Storage, StorageError, Upload};
use crate::wal::{self, WalFileName, WalKind};

/// WAL objects up to this size are read whole and stored create-if-absent (as `push` does);
/// larger objects are streamed.
pub const BUFFERED_OBJECT_LIMIT: u64 = 64 * 1024 * 1024;
/// Failures quoted in full in [`CopyError::Incomplete`].
const QUOTED_FAILURES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("target configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("source and target are the same repository ({0}): point --to at the configuration of another repository")]
    SameRepository(String),
    #[error("target {target} holds the repository of the cluster with system identifier {target_cluster}, but the source {source_location} belongs to cluster {source_cluster}: nothing was copied; point the target configuration's [repository] url at an empty location or at an earlier copy of this repository")]
    ForeignCluster {
        target: String,
        target_cluster: u64,
        source_location: String,
        source_cluster: u64,
    },
    #[error("target {target} holds another repository of this cluster (repository id {target_id}, the source's is {source_id}), sealed with another key: nothing was copied; use an empty location, or one filled by `pgvault copy` from this repository")]
    DifferentRepository {
        target: String,
        target_id: String,
        source_id: String,
    },
    #[error("target {target}: its descriptor {key} is unreadable ({message}); nothing was copied: check that the target location really is a pgvault repository")]
    BadTargetMeta {
        target: String,
        key: &'static str,
        message: String,
    },
    #[error("target {target}: the repository key opened by the target's passphrase (key id {target_key}) is not the source's ({source_key}); nothing was copied")]
    DifferentKey {
        target: String,
        target_key: String,
        source_key: String,
    },
    #[error("the source repository is not encrypted and the target {target} is not on this machine's disk: the copy would store backups in the clear; set [encryption] cipher = \"none\" in the target configuration to do that on purpose")]
    RemoteUnencrypted { target: String },
    #[error("{location}: {source}; this object of the source repository is damaged and was not copied (its backup stays out of the target): restore from another copy, or take a new backup")]
    Object {
        location: String,
        source: FormatError,
    },
    #[error("{location}: checksum mismatch for {path} at bundle offset {offset} (expected {expected}, got {found}); the source backup is corrupted and was not copied")]
    Checksum {
        location: String,
        path: String,
        offset: u64,
        expected: String,
        found: String,
    },
    #[error("{location}: {message}; the object was not copied")]
    Invalid { location: String, message: String },
    #[error("backup {id} was not copied: {reason}")]
    BackupSkipped { id: String, reason: String },
    #[error("copy to {target} is incomplete: {} object(s) could not be copied; the target holds only complete backups. {summary} Failures:\n{}\nFix the cause and run `pgvault copy` again: it copies only what is still missing", failures.len(), quote_failures(failures))]
    Incomplete {
        target: String,
        summary: String,
        failures: Vec<String>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

fn quote_failures(failures: &[String]) -> String {
    let mut s: Vec<String> = failures
        .iter()
        .take(QUOTED_FAILURES)
        .map(|f| format!("  - {f}"))
        .collect();
    if failures.len() > QUOTED_FAILURES {
        s.push(format!(
            "  - … and {} more",
            failures.len() - QUOTED_FAILURES
        ));
    }
    s.join("\n")
}

/// How to copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Only work out what would be copied; write nothing.
    pub dry_run: bool,
    /// Objects copied at once.
    pub parallel: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            dry_run: false,
            parallel: 4,
        }
    }
}

/// One thing the target lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanItem {
    /// A backup: `objects` of its objects (bundles, manifest, catalog) and `bytes` to copy.
    Backup {
        id: String,
        objects: usize,
        bytes: u64,
        objects_present: usize,
    },
    Wal {
        name: String,
        bytes: u64,
    },
}

/// What a copy did (or, for a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct CopySummary {
    pub source: String,
    pub target: String,
    pub dry_run: bool,
    /// The target's descriptor was created by this run.
    pub descriptor_created: bool,
    pub backups_copied: usize,
    pub backups_present: usize,
    pub wal_copied: usize,
    pub wal_present: usize,
    /// Objects (bundles, manifests, catalogs, WAL) and sealed bytes written to the target.
    pub objects_copied: usize,
    pub bytes_copied: u64,
    /// Bundles and manifests of incomplete backups already in the target (from an interrupted run).
    pub objects_reused: usize,
    /// What the target lacked when the run started.
    pub plan: Vec<PlanItem>,
}

impl CopySummary {
    /// One line for people: counts, bytes, and what was already there.
    pub fn one_line(&self) -> String {
        let verb = if self.dry_run { "would copy" } else { "copied" };
        format!(
            "{verb} {} backup(s), {} WAL file(s), {} to {}; already there: {} backup(s), {} WAL file(s){}",
            self.backups_copied,
            self.wal_copied,
            format_bytes(self.bytes_copied),
            self.target,
            self.backups_present,
            self.wal_present,
            if self.objects_reused > 0 { format!(", {} object(s) of unfinished backups", self.objects_reused) } else { String::new() }
        )
    }
}

/// How an object is checked while it streams through.
#[derive(Clone, Debug)]
enum Check {
    /// It opens (every chunk authenticates, the object is complete).
    Opens,
    /// It opens and its plaintext has this SHA-256 (the manifest).
    Sha256(String),
    /// A WAL segment or `.partial` file of this cluster.
    Segment {
        name: WalFileName,
        cluster: ClusterIdentity,
    },
    /// A bundle: every piece has its catalog SHA-256, and the plaintext is `size` bytes.
    Bundle {
        pieces: Vec<(String, Piece)>,
        size: u64,
    },
}

/// One object to copy.
#[derive(Clone, Debug)]
struct Job {
    key: String,
    size: u64,
    check: Check,
    /// Store create-if-absent (WAL); otherwise replace (a bundle of a failed earlier copy).
    create_only: bool,
}

fn store_err(target: &Storage, message: String) -> CopyError {
    CopyError::BadTargetMeta {
        target: target.to_string(),
        key: layout::META_KEY,
        message,
    }
}

/// Reads the target's descriptor, if any, without unlocking anything (the repository's one
/// descriptor reader, with its bounds).
async fn target_meta(target: &Storage) -> Result<Option<RepoMeta>, CopyError> {
    let Some(raw) = target.get_opt(layout::META_KEY).await? else {
        return Ok(None);
    };
    match crate::repository::parse_meta(&target.to_string(), &raw) {
        Ok(meta) => Ok(Some(meta)),
        Err(crate::repository::RepositoryError::BadMeta { message, .. }) => {
            Err(store_err(target, message))
        }
        Err(crate::repository::RepositoryError::NewerFormat { found, .. }) => Err(store_err(
            target,
            format!("format version {found}, newer than this pgvault understands: upgrade pgvault"),
        )),
        Err(e) => Err(store_err(target, e.to_string())),
    }
}

/// Refuses a target that is not (a copy of) the source repository.
fn check_same_repository(
    source: &Repository,
    target: &Storage,
    meta: &RepoMeta,
) -> Result<(), CopyError> {
    let src = source.meta();
    if meta.cluster.system_identifier != src.cluster.system_identifier {
        return Err(CopyError::ForeignCluster {
            target: target.to_string(),
            target_cluster: meta.cluster.system_identifier,
            source_location: source.storage().to_string(),
            source_cluster: src.cluster.system_identifier,
        });
    }
    if meta.repository_id != src.repository_id {
        return Err(CopyError::DifferentRepository {
            target: target.to_string(),
            target_id: meta.repository_id.clone(),
            source_id: src.repository_id.clone(),
        });
    }
    Ok(())
}

/// Whether the configured target is a local directory that does not exist yet.
fn missing_local_dir(cfg: &Config) -> bool {
    let url = cfg.repository.url.trim();
    let path = url
        .strip_prefix("file://")
        .or_else(|| url.starts_with('/').then_some(url));
    path.is_some_and(|p| !std::path::Path::new(p).exists())
}

/// The WAL segments a backup needs to become consistent (empty when they are inside it).
fn needed_wal(cat: &BackupCatalog, segment_size: u64) -> Vec<WalFileName> {
    if cat.wal_included {
        return Vec::new();
    }
    let (Ok(start), Ok(stop)) = (
        WalFileName::parse(&cat.start_wal),
        WalFileName::parse(&cat.stop_wal),
    ) else {
        return Vec::new();
    };
    if start.timeline != stop.timeline {
        return vec![start, stop];
    }
    let (a, b) = (
        start.segment_number(segment_size),
        stop.segment_number(segment_size),
    );
    (a..=b.max(a))
        .map(|n| WalFileName::from_segment_number(start.timeline, n, segment_size))
        .collect()
}

/// Copies everything the target lacks. `target_config` is the target's configuration file
/// (its `[repository]` and `[encryption]`).
pub async fn run(
    source: &Repository,
    target_config: &Config,
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopySummary, CopyError> {
    let parallel = opts.parallel.clamp(1, 64);
    // In a dry run a local target that does not exist yet is simply empty: create nothing.
    let target_store = if opts.dry_run && missing_local_dir(target_config) {
        None
    } else {
        Some(Storage::open(&target_config.repository, !opts.dry_run)?)
    };
    let target_name = match &target_store {
        Some(s) => s.to_string(),
        None => target_config.repository.url.trim().to_string(),
    };
    let mut summary = CopySummary {
        source: source.storage().to_string(),
        target: target_name.clone(),
        dry_run: opts.dry_run,
        ..CopySummary::default()
    };
    if target_name == summary.source {
        return Err(CopyError::SameRepository(target_name));
    }
    let existing_meta = match &target_store {
        Some(s) => target_meta(s).await?,
        None => None,
    };
    if let (Some(store), Some(meta)) = (&target_store, &existing_meta) {
        check_same_repository(source, store, meta)?;
    }
    let target_is_local = target_store.as_ref().is_none_or(Storage::is_local);
    if !source.is_encrypted() && !target_is_local && !target_config.encryption_disabled() {
        return Err(CopyError::RemoteUnencrypted {
            target: target_name,
        });
    }

    // What the target already holds (nothing, if it has no descriptor yet).
    let mut present: HashMap<String, u64> = HashMap::new();
    if let (Some(store), Some(_)) = (&target_store, &existing_meta) {
        for prefix in [layout::WAL_PREFIX, layout::BACKUPS_PREFIX] {
            for o in store.list(prefix).await? {
                present.insert(o.key, o.size);
            }
        }
    }

    // The plan: WAL first (backups need theirs before their catalog), then backups oldest first.
    let segment_size = source.cluster().wal_segment_size;
    let mut wal_jobs = Vec::new();
    for (name, info) in source.list_wal().await? {
        if present.contains_key(&info.key) {
            summary.wal_present += 1;
            continue;
        }
        summary.plan.push(PlanItem::Wal {
            name: name.to_string(),
            bytes: info.size,
        });
        let check = if name.has_page_header() {
            Check::Segment {
                name,
                cluster: source.cluster().clone(),
            }
        } else {
            Check::Opens
        };
        wal_jobs.push(Job {
            key: info.key,
            size: info.size,
            check,
            create_only: true,
        });
    }
    let mut backup_jobs: Vec<(BackupCatalog, Vec<Job>, usize)> = Vec::new();
    for cat in source.list_backups().await? {
        if present.contains_key(&layout::catalog_key(&cat.id)) {
            summary.backups_present += 1;
            continue;
        }
        let stored: HashMap<String, u64> = source
            .storage()
            .list(&layout::backup_dir(&cat.id))
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let mut jobs = Vec::new();
        let mut reused = 0usize;
        let mut pieces: HashMap<u32, Vec<(String, Piece)>> = HashMap::new();
        for f in &cat.files {
            for p in &f.pieces {
                pieces
                    .entry(p.bundle)
                    .or_default()
                    .push((f.path.clone(), p.clone()));
            }
        }
        let mut wanted: Vec<(String, Check)> = Vec::new();
        for b in &cat.bundles {
            let mut ps = pieces.remove(&b.id).unwrap_or_default();
            ps.sort_by_key(|(_, p)| p.bundle_offset);
            wanted.push((
                layout::bundle_key(&cat.id, b.id),
                Check::Bundle {
                    pieces: ps,
                    size: b.size,
                },
            ));
        }
        if let Some(sha) = &cat.manifest_sha256 {
            wanted.push((layout::manifest_key(&cat.id), Check::Sha256(sha.clone())));
        }
        for (key, check) in wanted {
            // A missing source object is reported when its copy is attempted.
            let size = stored.get(&key).copied().unwrap_or(0);
            if stored.contains_key(&key) && present.get(&key) == Some(&size) {
                reused += 1;
                continue;
            }
            jobs.push(Job {
                key,
                size,
                check,
                create_only: false,
            });
        }
        let bytes = jobs.iter().map(|j| j.size).sum::<u64>()
            + stored
                .get(&layout::catalog_key(&cat.id))
                .copied()
                .unwrap_or(0);
        summary.plan.push(PlanItem::Backup {
            id: cat.id.clone(),
            objects: jobs.len() + 1,
            bytes,
            objects_present: reused,
        });
        backup_jobs.push((cat, jobs, reused));
    }

    if opts.dry_run {
        summary.wal_copied = wal_jobs.len();
        summary.backups_copied = backup_jobs.len();
        summary.objects_reused = backup_jobs.iter().map(|b| b.2).sum();
        summary.objects_copied =
            wal_jobs.len() + backup_jobs.iter().map(|b| b.1.len() + 1).sum::<usize>();
        summary.bytes_copied = summary
            .plan
            .iter()
            .map(|p| match p {
                PlanItem::Backup { bytes, .. } | PlanItem::Wal { bytes, .. } => *bytes,
            })
            .sum();
        return Ok(summary);
    }
    let Some(target_store) = target_store else {
        return Err(CopyError::Internal(
            "the target store was not opened".into(),
        ));
    };

    // The descriptor, byte for byte: same repository id, same wrapped key. Only whether the
    // store honours conditional create is the target store's own (probed as `init` does); when
    // it differs from the source's, that one field is rewritten.
    if existing_meta.is_none() {
        let raw = source.storage().get(layout::META_KEY).await?;
        let honoured = target_config.repository.conditional_create
            && target_store.probe_create_mode().await? == CreateMode::Conditional;
        let body = if source.meta().conditional_create == Some(honoured) {
            raw
        } else {
            let mut meta = source.meta().clone();
            meta.conditional_create = Some(honoured);
            let text = serde_json::to_vec_pretty(&meta)
                .map_err(|e| CopyError::Internal(format!("descriptor: {e}")))?;
            Bytes::from(text)
        };
        match target_store.put_if_absent(layout::META_KEY, body).await? {
            PutOutcome::Created => summary.descriptor_created = true,
            PutOutcome::AlreadyExists => {
                // Someone else created it meanwhile: it must still be this repository.
                if let Some(meta) = target_meta(&target_store).await? {
                    check_same_repository(source, &target_store, &meta)?;
                }
            }
        }
    }
    let target = Repository::open(target_config).await?;
    let (skey, tkey) = (
        source.key().map(|k| k.key_id_hex()),
        target.key().map(|k| k.key_id_hex()),
    );
    if skey != tkey {
        return Err(CopyError::DifferentKey {
            target: target_name,
            target_key: tkey.unwrap_or_else(|| "none (unencrypted)".into()),
            source_key: skey.unwrap_or_else(|| "none (unencrypted)".into()),
        });
    }

    let total: u64 = summary
        .plan
        .iter()
        .map(|p| match p {
            PlanItem::Backup { bytes, .. } | PlanItem::Wal { bytes, .. } => *bytes,
        })
        .sum();
    progress.total(total);
    progress.phase("copying WAL");
    let mut failures: Vec<String> = Vec::new();
    // The target repository's store carries the create mode its descriptor records.
    let target_store = target.storage().clone();
    // Objects are verified under the source's identity; the target has the same repository id
    // and keys, so identity-bound objects stay valid there byte for byte.
    let ctx = Ctx {
        source: source.storage().clone(),
        target: target_store.clone(),
        sealing: source.sealing(),
        progress: progress.clone(),
    };

    let results = run_jobs(&ctx, wal_jobs, parallel).await;
    for (job, r) in results {
        match r {
            Ok(n) => {
                summary.wal_copied += 1;
                summary.objects_copied += 1;
                summary.bytes_copied += n;
                present.insert(job.key, n);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }

    progress.phase("copying backups");
    for (cat, jobs, reused) in backup_jobs {
        summary.objects_reused += reused;
        let mut ok = true;
        for (job, r) in run_jobs(&ctx, jobs, parallel).await {
            match r {
                Ok(n) => {
                    summary.objects_copied += 1;
                    summary.bytes_copied += n;
                    present.insert(job.key, n);
                }
                Err(e) => {
                    ok = false;
                    failures.push(e.to_string());
                }
            }
        }
        if !ok {
            failures.push(
                CopyError::BackupSkipped {
                    id: cat.id.clone(),
                    reason: "some of its objects failed (above)".into(),
                }
                .to_string(),
            );
            continue;
        }
        // Completeness rule: the WAL that makes the backup consistent must be there first.
        let missing: Vec<String> = needed_wal(&cat, segment_size)
            .iter()
            .filter(|n| !present.contains_key(&layout::wal_key(n)))
            .map(|n| n.to_string())
            .collect();
        if !missing.is_empty() {
            failures.push(
                CopyError::BackupSkipped {
                    id: cat.id.clone(),
                    reason: format!(
                        "the WAL it needs is not in the target: {}",
                        missing.join(", ")
                    ),
                }
                .to_string(),
            );
            continue;
        }
        // The catalog last: opened and checked (it is the source's own), then stored as is.
        match copy_catalog(source, &target_store, &cat).await {
            Ok(n) => {
                summary.backups_copied += 1;
                summary.objects_copied += 1;
                summary.bytes_copied += n;
                progress.advance(n);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    progress.finish();
    if !failures.is_empty() {
        return Err(CopyError::Incomplete {
            target: target_name,
            summary: summary.one_line() + ".",
            failures,
        });
    }
    Ok(summary)
}

async fn copy_catalog(
    source: &Repository,
    target: &Storage,
    cat: &BackupCatalog,
) -> Result<u64, CopyError> {
    let key = layout::catalog_key(&cat.id);
    let raw = source.storage().get(&key).await?;
    let plain = source.unseal(&key, &raw)?;
    let parsed: BackupCatalog = serde_json::from_slice(&plain).map_err(|e| CopyError::Invalid {
        location: format!("{}/{key}", source.storage()),
        message: format!("not a valid catalog: {e}"),
    })?;
    if parsed.id != cat.id {
        return Err(CopyError::Invalid {
            location: format!("{}/{key}", source.storage()),
            message: format!("the catalog is backup {}'s, not {}'s", parsed.id, cat.id),
        });
    }
    let n = raw.len() as u64;
    target.put(&key, raw).await?;
    Ok(n)
}

/// What every object copy needs.
#[derive(Clone)]
struct Ctx {
    source: Storage,
    target: Storage,
    sealing: ObjectSealing,
    progress: Arc<dyn Progress>,
}

async fn run_jobs(
    ctx: &Ctx,
    jobs: Vec<Job>,
    parallel: usize,
) -> Vec<(Job, Result<u64, CopyError>)> {
    stream::iter(jobs)
        .map(|job| {
            let ctx = ctx.clone();
            async move {
                let r = copy_object(&ctx, &job).await;
                (job, r)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Where the verified bytes go.
enum Sink {
    /// Small objects stored create-if-absent once complete.
    Buffer(Vec<u8>),
    Upload(Box<Upload>),
}

/// Streams one object from the source to the target while a blocking task opens and checks it;
/// the object is completed in the target only if every byte was read and verified. Returns the
/// bytes stored.
async fn copy_object(ctx: &Ctx, job: &Job) -> Result<u64, CopyError> {
    let location = format!("{}/{}", ctx.source, job.key);
    let mut stream = ctx.source.get_stream(&job.key).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, StorageError>>(8);
    let (sealing, check, loc, object_key) = (
        ctx.sealing.clone(),
        job.check.clone(),
        location.clone(),
        job.key.clone(),
    );
    let verifier = tokio::task::spawn_blocking(move || {
        verify(
            ChannelReader::from_receiver(rx),
            &sealing,
            &object_key,
            &check,
            &loc,
        )
    });
    let mut sink = if job.create_only && job.size <= BUFFERED_OBJECT_LIMIT {
        Sink::Buffer(Vec::with_capacity(job.size as usize))
    } else {
        Sink::Upload(Box::new(ctx.target.upload(&job.key).await?))
    };
    let mut failure: Option<CopyError> = None;
    let mut bytes = 0u64;
    while let Some(item) = stream.next().await {
        let chunk = match item {
            Ok(c) => c,
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        };
        bytes += chunk.len() as u64;
        ctx.progress.advance(chunk.len() as u64);
        let written = match &mut sink {
            Sink::Buffer(v) => {
                v.extend_from_slice(&chunk);
                Ok(())
            }
            Sink::Upload(u) => u.write(&chunk).await,
        };
        if let Err(e) = written {
            failure = Some(e.into());
            break;
        }
        // A closed channel means the verifier stopped on an error: its result says which.
        if tx.send(Ok(chunk)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let verified = verifier
        .await
        .map_err(|e| CopyError::Internal(format!("verifying {location}: {e}")))?;
    // A read failure of the source shows up in the verifier as a truncated object: report the
    // cause instead.
    if let Some(e) = failure.or(verified.err()) {
        if let Sink::Upload(u) = sink {
            u.abort().await;
        }
        return Err(e);
    }
    match sink {
        Sink::Buffer(v) => {
            // Create-if-absent: a WAL object that appeared meanwhile is never replaced.
            ctx.target.put_if_absent(&job.key, Bytes::from(v)).await?;
        }
        Sink::Upload(u) => u.finish().await?,
    }
    Ok(bytes)
}

/// Opens the object and checks it to the end.
fn verify<R: Read>(
    reader: R,
    sealing: &ObjectSealing,
    object_key: &str,
    check: &Check,
    location: &str,
) -> Result<(), CopyError> {
    let object_err = |source: FormatError| CopyError::Object {
        location: location.to_string(),
        source,
    };
    let read_err = |e: io::Error| object_err(into_format_error(e));
    let invalid = |message: String| CopyError::Invalid {
        location: location.to_string(),
        message,
    };
    let mut obj = sealing.reader(reader, object_key).map_err(object_err)?;
    match check {
        Check::Opens => {
            io::copy(&mut obj, &mut io::sink()).map_err(read_err)?;
        }
        Check::Sha256(expected) => {
            let mut h = HashWriter(Sha256::new());
            io::copy(&mut obj, &mut h).map_err(read_err)?;
            let found = hex::encode(h.0.finalize());
            if &found != expected {
                return Err(CopyError::Checksum {
                    location: location.to_string(),
                    path: "backup_manifest".into(),
                    offset: 0,
                    expected: expected.clone(),
                    found,
                });
            }
        }
        Check::Segment { name, cluster } => {
            // The long page header is at the start; the rest is only counted.
            let mut head = Vec::with_capacity(64);
            (&mut obj)
                .take(64)
                .read_to_end(&mut head)
                .map_err(read_err)?;
            let rest = io::copy(&mut obj, &mut io::sink()).map_err(read_err)?;
            check_segment_header(name, &head, head.len() as u64 + rest, cluster)
                .map_err(|e| invalid(e.to_string()))?;
        }
        Check::Bundle { pieces, size } => {
            // The one bundle verifier (restore uses it too), with a sink that keeps nothing.
            let nop = |_: usize, _: &Piece, _: u64, _: &[u8]| Ok::<(), CopyError>(());
            walk_bundle(&mut obj, pieces.iter().map(|(_, p)| p), Some(*size), nop).map_err(
                |e| match e {
                    WalkError::Read(e) => read_err(e),
                    WalkError::Checksum {
                        index,
                        offset,
                        expected,
                        found,
                    } => CopyError::Checksum {
                        location: location.to_string(),
                        path: pieces[index].0.clone(),
                        offset,
                        expected,
                        found,
                    },
                    WalkError::Sink(e) => e,
                    other => invalid(other.to_string()),
                },
            )?;
        }
    }
    Ok(())
}

/// [`wal::check_segment`] for a streamed segment: the header bytes and the total length.
fn check_segment_header(
    name: &WalFileName,
    head: &[u8],
    len: u64,
    cluster: &ClusterIdentity,
) -> Result<(), wal::WalError> {
    let foreign = |detail: String| {
        Err(wal::WalError::Foreign {
            name: name.to_string(),
            detail,
        })
    };
    let h = wal::read_segment_header(name, head)?;
    if h.system_identifier != cluster.system_identifier {
        return foreign(format!(
            "its system identifier is {}, the repository's cluster is {}",
            h.system_identifier, cluster.system_identifier
        ));
    }
    if u64::from(h.segment_size) != cluster.wal_segment_size {
        return foreign(format!(
            "its segment size is {} bytes, the repository's is {}",
            h.segment_size, cluster.wal_segment_size
        ));
    }
    if let Some(magic) = wal::page_magic_for_major(cluster.major()) {
        if h.magic != magic {
            return foreign(format!(
                "its page magic {:#06X} is not PostgreSQL {}'s ({magic:#06X})",
                h.magic,
                cluster.major()
            ));
        }
    }
    if h.page_address != name.start_lsn(cluster.wal_segment_size) {
        return foreign(format!(
            "it holds the segment starting at {}, not {}",
            h.page_address,
            name.start_lsn(cluster.wal_segment_size)
        ));
    }
    if matches!(name.kind, WalKind::Segment | WalKind::Partial) && len != cluster.wal_segment_size {
        return foreign(format!(
            "it is {len} bytes long, a segment is {} bytes",
            cluster.wal_segment_size
        ));
    }
    Ok(())
}

struct HashWriter(Sha256);

impl io::Write for HashWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{seal_bytes, Codec};

    fn piece(bundle_offset: u64, data: &[u8]) -> Piece {
        Piece {
            bundle: 0,
            bundle_offset,
            file_offset: 0,
            len: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        }
    }

    #[test]
    fn bundle_check_finds_a_bad_piece_and_a_wrong_size() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let sealing = ObjectSealing {
            codec: Codec::default(),
            key: None,
            repository_id: "r".into(),
            write_version: 2,
        };
        let sealed = sealing.seal("k", &data, None, None).unwrap();
        let v1 = seal_bytes(&data, &Codec::default(), None).unwrap();
        let verify = |bytes: &[u8], _: Option<()>, check: &Check, loc: &str| {
            verify(bytes, &sealing, "k", check, loc)
        };
        verify(&v1[..], None, &Check::Opens, "x").unwrap();
        // Identity-bound: the same bytes under another key are refused.
        let moved = super::verify(&sealed[..], &sealing, "other", &Check::Opens, "x");
        assert!(
            matches!(
                moved,
                Err(CopyError::Object {
                    source: FormatError::NotThisObject { .. },
                    ..
                })
            ),
            "{moved:?}"
        );
        let good = Check::Bundle {
            pieces: vec![
                ("a".into(), piece(0, &data[..1000])),
                ("b".into(), piece(5000, &data[5000..90_000])),
            ],
            size: data.len() as u64,
        };
        verify(&sealed[..], None, &good, "x").unwrap();
        let mut bad_piece = piece(5000, &data[5000..90_000]);
        bad_piece.sha256 = hex::encode(Sha256::digest(b"other"));
        let bad = Check::Bundle {
            pieces: vec![("b".into(), bad_piece)],
            size: data.len() as u64,
        };
        assert!(matches!(
            verify(&sealed[..], None, &bad, "x"),
            Err(CopyError::Checksum { .. })
        ));
        let short = Check::Bundle {
            pieces: vec![],
            size: data.len() as u64 + 1,
        };
        assert!(matches!(
            verify(&sealed[..], None, &short, "x"),
            Err(CopyError::Invalid { .. })
        ));
        let mut flipped = sealed.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        assert!(matches!(
            verify(&flipped[..], None, &good, "x"),
            Err(CopyError::Object { .. })
        ));
        let truncated = &sealed[..sealed.len() - 20];
        assert!(matches!(
            verify(truncated, None, &Check::Opens, "x"),
            Err(CopyError::Object { .. })
        ));
    }

    #[test]
    fn wal_ranges_cover_start_to_stop() {
        let seg = 16 * 1024 * 1024;
        let mut cat: BackupCatalog = serde_json::from_value(serde_json::json!({
            "catalog_version": 1, "id": "20260102-030405F", "label": "l", "kind": "full", "pgvault_version": "0",
            "system_identifier": "1", "pg_version_num": 150000, "timeline": 1, "start_lsn": "0/2000028",
            "stop_lsn": "1/100", "stop_timeline": 1, "start_wal": "0000000100000000000000FE",
            "stop_wal": "000000010000000100000001", "start_time": "2026-01-02T03:04:05Z",
            "stop_time": "2026-01-02T03:04:06Z", "wal_included": false, "snapshot_after_stop": null,
            "size": 0, "stored_size": 0, "compression": "zstd", "encrypted": false, "owner_uid": null,
            "owner_gid": null, "tablespaces": [], "bundles": [], "directories": [], "symlinks": [],
            "files": [], "manifest_sha256": null
        }))
        .unwrap();
        let names: Vec<String> = needed_wal(&cat, seg)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "0000000100000000000000FE",
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        cat.wal_included = true;
        assert!(needed_wal(&cat, seg).is_empty());
    }
}
