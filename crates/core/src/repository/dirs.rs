//! Doors for retention's view of backup directories: the objects in one (the ids of every
//! backup directory come from `index.rs`'s `backup_dir_ids`), so that `expire` can find what an interrupted backup or delete left
//! behind without spelling keys.

use crate::repository::{layout, Repository, RepositoryError};
use crate::storage::ObjectInfo;

impl Repository {
    /// Every object stored in backup `id`'s directory.
    pub async fn backup_objects(&self, id: &str) -> Result<Vec<ObjectInfo>, RepositoryError> {
        Ok(self.storage().list(&layout::backup_dir(id)).await?)
    }
}
