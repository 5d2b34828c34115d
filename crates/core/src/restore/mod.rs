//! Restores a base backup into a new data directory and sets up point-in-time recovery.
//!
//! A restore is planned first ([`plan()`]: the backup chosen for the target by [`target`], every
//! catalog path checked and routed by [`paths`], the destinations checked) and then carried out
//! ([`execute()`]): bundles are downloaded and unpacked in parallel, every piece checked against
//! its SHA-256, and the recovery settings written by [`conf`]. The order of writes (a marker
//! first, `global/pg_control` last) makes a restore safe to interrupt and repeat; a directory
//! restore did not write itself is refused, so a restore never overwrites anything.

mod blockcrc;
mod chain;
mod combined;
pub mod conf;
mod execute;
pub mod failpoint;
pub mod marker;
pub mod paths;
mod plan;
pub mod target;
mod unpack;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::progress::Progress;
use crate::repository::{Repository, RepositoryError};
use crate::storage::StorageError;
use crate::survey::SurveyError;

pub use chain::ChainError;
pub use conf::{ArchiveMode, ConfError, RestoreType};
pub use execute::execute;
pub use paths::PathError;
pub use plan::{plan, plan_for, RestorePlan, PG_CONTROL_TMP};
pub use target::{Target, TargetAction, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Survey(#[from] SurveyError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error("{path} is not empty and holds no pgvault restore marker: restore only writes into a new or empty directory, so nothing can be overwritten. Pick another directory, or, if it holds nothing you need, start over with: rm -rf {dirs}")]
    NotEmpty { path: PathBuf, dirs: String },
    #[error("{path} holds an interrupted restore of backup {backup}; restore only resumes the same backup into the same places. Finish it with `pgvault restore --backup {backup}` and the same --tablespace-map/--link-map, or start over with: rm -rf {dirs}")]
    OtherRestore {
        path: PathBuf,
        backup: String,
        dirs: String,
    },
    #[error("{path} holds a pgvault restore marker that cannot be read, so restore cannot tell what it wrote there; start over with: rm -rf {dirs}")]
    MarkerUnreadable { path: PathBuf, dirs: String },
    #[error("another pgvault restore (pid {pid}) is writing into {path}; wait for it or stop it first")]
    Busy { path: PathBuf, pid: u32 },
    #[error("tablespace {oid} would be restored into {path}, which is not empty (the original cluster may still be using it); nothing was written. Restore it elsewhere with --tablespace-map {original}=NEW_DIR, or move {path} away")]
    TablespaceNotEmpty {
        oid: String,
        original: String,
        path: PathBuf,
    },
    #[error("link {link} would be restored into {path}, which is not empty; nothing was written. Map it elsewhere with --link-map {link}=NEW_DIR, or move {path} away")]
    LinkNotEmpty { link: String, path: PathBuf },
    #[error("{a} and {b} overlap: the data directory, tablespace and link destinations must be separate directories")]
    Overlap { a: PathBuf, b: PathBuf },
    #[error("'{0}' is not a usable data directory path: it must be absolute")]
    BadDestination(String),
    #[error("backup {0} has no global/pg_control: it is not a PostgreSQL base backup (damaged or forged catalog)")]
    NoPgControl(String),
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}; it was restored from the backup but is unreadable, so the recovery settings cannot be written safely")]
    AutoConf { path: PathBuf, source: std::io::Error },
    #[error("tablespace mapping '{0}': expected OLD=NEW, with OLD a tablespace OID or its original location and NEW an absolute path")]
    BadMapping(String),
    #[error("tablespace mapping {0}: the backup has no tablespace with that OID or location")]
    UnknownTablespace(String),
    #[error("link mapping '{0}': expected OLD=NEW, with OLD a link's path in the data directory and NEW an absolute path, each link mapped once")]
    BadLinkMapping(String),
    #[error("link mapping {0}: the backup has no such link outside pg_tblspc (tablespaces are mapped with --tablespace-map)")]
    UnknownLink(String),
    #[error("the catalog of backup {id} cannot be read: {why}")]
    UnreadableCatalog { id: String, why: String },
    #[error("{0}")]
    Unpack(#[from] unpack::UnpackError),
    #[error(transparent)]
    Chain(#[from] chain::ChainError),
    #[error("internal: {0}")]
    Internal(String),
}

/// What to restore and how.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// Absolute path of the data directory to restore into.
    pub pgdata: PathBuf,
    /// A backup id, `latest`, or `None` to choose by target.
    pub backup: Option<String>,
    pub target: Target,
    pub action: TargetAction,
    /// `latest`, `current` or a timeline id.
    pub timeline: Option<String>,
    /// `OLD=NEW`, OLD being a tablespace OID or original location.
    pub tablespace_map: Vec<String>,
    /// `OLD=NEW`, OLD a link's path in the data directory, NEW an absolute path; unmapped links
    /// come back as plain directories.
    pub link_map: Vec<String>,
    /// Whether the restored cluster keeps archiving (`archive_mode`).
    pub archive_mode: ArchiveMode,
    /// Recovery to a target, or a standby following the archive.
    pub kind: RestoreType,
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
    /// An interrupted restore of the same backup was found and started over (when it began).
    pub resumed: Option<chrono::DateTime<chrono::Utc>>,
}

/// Restores into `req.pgdata`: [`plan()`] then [`execute()`].
pub async fn run(
    config: &Config,
    repo: &Repository,
    req: &RestoreRequest,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary, RestoreError> {
    let plan = plan(config, repo, req).await?;
    tracing::info!(backup = %plan.catalog.id, resume = plan.resume.is_some(), "restoring");
    execute(config, repo, &plan, progress).await
}
