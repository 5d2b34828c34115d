//! The target repository: recognising it (or its absence) before anything is written, and
//! creating its descriptor as a byte copy of the source's.
//!
//! Copy never writes into a location that holds another repository (another cluster, or
//! another key): these checks run first, also in a dry run.

use std::collections::HashMap;

use bytes::Bytes;

use crate::config::Config;
use crate::repository::{layout, RepoMeta, Repository};
use crate::storage::{CreateMode, PutOutcome, Storage};

use super::{CopyError, CopySummary};

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
        Err(crate::repository::RepositoryError::BadMeta { message, .. }) => Err(store_err(target, message)),
        Err(crate::repository::RepositoryError::NewerFormat { found, .. }) => Err(store_err(
            target,
            format!("format version {found}, newer than this pgvault understands: upgrade pgvault"),
        )),
        Err(e) => Err(store_err(target, e.to_string())),
    }
}

/// Refuses a target that is not (a copy of) the source repository.
fn check_same_repository(source: &Repository, target: &Storage, meta: &RepoMeta) -> Result<(), CopyError> {
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

/// The target as found before anything is written.
pub(super) struct TargetState {
    /// `None` in a dry run against a local directory that does not exist yet.
    pub store: Option<Storage>,
    pub name: String,
    pub meta: Option<RepoMeta>,
    /// What the target already holds, key → size (nothing, if it has no descriptor yet).
    pub present: HashMap<String, u64>,
}

/// Opens the target and refuses one that is not (a copy of) the source repository.
pub(super) async fn inspect_target(
    source: &Repository,
    target_config: &Config,
    dry_run: bool,
) -> Result<TargetState, CopyError> {
    // In a dry run a local target that does not exist yet is simply empty: create nothing.
    let store = if dry_run && missing_local_dir(target_config) {
        None
    } else {
        Some(Storage::open(&target_config.repository, !dry_run)?)
    };
    let name = match &store {
        Some(s) => s.to_string(),
        None => target_config.repository.url.trim().to_string(),
    };
    if name == source.storage().to_string() {
        return Err(CopyError::SameRepository(name));
    }
    let meta = match &store {
        Some(s) => target_meta(s).await?,
        None => None,
    };
    if let (Some(store), Some(meta)) = (&store, &meta) {
        check_same_repository(source, store, meta)?;
    }
    let target_is_local = store.as_ref().is_none_or(Storage::is_local);
    if !source.is_encrypted() && !target_is_local && !target_config.encryption_disabled() {
        return Err(CopyError::RemoteUnencrypted { target: name });
    }
    let mut present = HashMap::new();
    if let (Some(store), Some(_)) = (&store, &meta) {
        for prefix in [layout::WAL_PREFIX, layout::BACKUPS_PREFIX, layout::WAL_GAPS_PREFIX] {
            for o in store.list(prefix).await? {
                present.insert(o.key, o.size);
            }
        }
    }
    Ok(TargetState {
        store,
        name,
        meta,
        present,
    })
}

/// Writes the target's descriptor if it has none, opens the target repository and checks that
/// it has the source's key.
pub(super) async fn prepare_target(
    source: &Repository,
    target_config: &Config,
    target: &TargetState,
    summary: &mut CopySummary,
) -> Result<Repository, CopyError> {
    let Some(target_store) = &target.store else {
        return Err(CopyError::Internal("the target store was not opened".into()));
    };
    // The descriptor, byte for byte: same repository id, same wrapped key. Only whether the
    // store honours conditional create is the target store's own (probed as `init` does); when
    // it differs from the source's, that one field is rewritten.
    if target.meta.is_none() {
        let raw = source.storage().get(layout::META_KEY).await?;
        let honoured = target_config.repository.conditional_create
            && target_store.probe_create_mode().await? == CreateMode::Conditional;
        let body = if source.meta().conditional_create == Some(honoured) {
            raw
        } else {
            let mut meta = source.meta().clone();
            meta.conditional_create = Some(honoured);
            let text = serde_json::to_vec_pretty(&meta).map_err(|e| CopyError::Internal(format!("descriptor: {e}")))?;
            Bytes::from(text)
        };
        match target_store.put_if_absent(layout::META_KEY, body).await? {
            PutOutcome::Created => summary.descriptor_created = true,
            PutOutcome::AlreadyExists => {
                // Someone else created it meanwhile: it must still be this repository.
                if let Some(meta) = target_meta(target_store).await? {
                    check_same_repository(source, target_store, &meta)?;
                }
            }
        }
    }
    let repo = Repository::open(target_config).await?;
    let (skey, tkey) = (source.key().map(|k| k.key_id_hex()), repo.key().map(|k| k.key_id_hex()));
    if skey != tkey {
        return Err(CopyError::DifferentKey {
            target: target.name.clone(),
            target_key: tkey.unwrap_or_else(|| "none (unencrypted)".into()),
            source_key: skey.unwrap_or_else(|| "none (unencrypted)".into()),
        });
    }
    Ok(repo)
}
