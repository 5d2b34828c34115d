//! Doors for retention's view of backup directories: every backup directory (complete or not)
//! and the objects in one, so that `expire` can find what an interrupted backup or delete left
//! behind without spelling keys.

use crate::repository::{catalog, layout, Repository, RepositoryError};
use crate::storage::ObjectInfo;

impl Repository {
    /// The id of every backup directory, with or without a catalog, sorted (one listing request
    /// per 1000 ids).
    pub async fn backup_dir_ids(&self) -> Result<Vec<String>, RepositoryError> {
        let mut ids: Vec<String> = self
            .storage()
            .list_dirs(layout::BACKUPS_PREFIX)
            .await?
            .into_iter()
            .filter(|id| catalog::is_backup_id(id))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every object stored in backup `id`'s directory.
    pub async fn backup_objects(&self, id: &str) -> Result<Vec<ObjectInfo>, RepositoryError> {
        Ok(self.storage().list(&layout::backup_dir(id)).await?)
    }
}

/// A repository on `storage` with descriptor `meta`, unencrypted (for unit tests of jobs that
/// run on a repository, e.g. retention's execution on an in-memory store).
#[cfg(test)]
pub(crate) async fn test_repository(storage: crate::storage::Storage, meta: super::RepoMeta) -> Repository {
    let body = serde_json::to_vec(&meta).expect("descriptor json");
    storage
        .put(layout::META_KEY, bytes::Bytes::from(body))
        .await
        .expect("descriptor");
    Repository::from_parts(storage, meta, None)
}
