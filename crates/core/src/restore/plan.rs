//! Deciding everything a restore will do before it writes a byte: the backup, where every catalog
//! entry goes (each path checked), and whether the destination directories may be written.
//!
//! A forged or damaged catalog is refused here, and so is a directory restore did not write
//! itself; `--dry-run` prints a plan and stops.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::conf::check_request;
use super::marker::{self, DirState, Marker};
use super::paths::{validate, validate_absolute, Dest, PathError};
use super::{target, RestoreError, RestoreRequest, Target};
use crate::config::Config;
use crate::repository::{BackupCatalog, Repository, RepositoryError};
use crate::survey::{survey, Times};
use crate::timeline::Choice;

/// Temporary name of `global/pg_control` until everything else is durable.
pub const PG_CONTROL_TMP: &str = "pg_control.pgvault-restoring";

/// Everything a restore will do, decided before anything is written.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub catalog: BackupCatalog,
    pub request: RestoreRequest,
    pub pgdata: PathBuf,
    /// Tablespace oid and the directory it is restored into (`pg_tblspc/<oid>` links there).
    pub tablespaces: Vec<(u32, PathBuf)>,
    /// Links of the backup mapped with `link_map`: path in the data directory, destination.
    pub links: Vec<(String, PathBuf)>,
    /// Links of the backup restored as plain directories (not mapped).
    pub plain_links: Vec<Dest>,
    /// Catalog directories and their modes.
    pub directories: Vec<(Dest, u32)>,
    /// Where each of `catalog.files` is written (`global/pg_control` under [`PG_CONTROL_TMP`]).
    pub files: Vec<Dest>,
    /// The temporary `global/pg_control`.
    pub pg_control: Dest,
    /// An interrupted restore of the same backup into the same places, to start over.
    pub resume: Option<Marker>,
    /// What recovery will read, from the archive model: the timeline path, the segments, the
    /// furthest reachable point (`None` only for plans made by [`plan_for`] alone).
    pub recovery: Option<Choice>,
    /// For an incremental backup: the chain down to its full backup, restored in one pass
    /// (`catalog` is then the combined result's).
    pub chain: Option<std::sync::Arc<super::combined::ChainPlan>>,
}

impl RestorePlan {
    /// The marker this plan writes.
    pub fn marker(&self) -> Marker {
        Marker::new(&self.catalog.id, self.tablespaces.clone(), self.links.clone())
    }

    /// Every directory restore writes into: the data directory, then tablespaces and links.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut r = vec![self.pgdata.clone()];
        r.extend(self.tablespaces.iter().map(|(_, p)| p.clone()));
        r.extend(self.links.iter().map(|(_, p)| p.clone()));
        r
    }
}

/// Chooses the backup with the archive model and checks everything; writes nothing.
///
/// The backup is on the path to the requested timeline and consistent before the target, and
/// every segment recovery needs up to the target is archived; otherwise this refuses, naming
/// the first missing segment and the furthest point that can be reached.
pub async fn plan(_config: &Config, repo: &Repository, req: &RestoreRequest) -> Result<RestorePlan, RestoreError> {
    check_request(&req.target, req.kind)?;
    // The choice is made from the backup index's summaries; the chosen backup's real catalog
    // must agree with its summary. When it does not, the index has just been repaired from the
    // catalogs, and the choice is made once more from the repaired index.
    match plan_once(repo, req).await {
        Err(RestoreError::Repository(RepositoryError::IndexDisagreed { id, .. })) => {
            tracing::warn!(backup = %id, "the backup index disagreed with the catalog of {id}; choosing again from the repaired index");
            plan_once(repo, req).await
        }
        other => other,
    }
}

async fn plan_once(repo: &Repository, req: &RestoreRequest) -> Result<RestorePlan, RestoreError> {
    let times = match req.target {
        Target::Lsn(_) | Target::Immediate | Target::Xid(_) => Times::None,
        Target::End | Target::Time(_) | Target::Name(_) => Times::AfterOldestBackup,
    };
    let s = survey(repo, times).await?;
    let timeline = target::parse_timeline(req.timeline.as_deref())?;
    if let Some(id) = req.backup.as_deref().filter(|id| *id != "latest") {
        if let Some((_, why)) = s.unreadable.iter().find(|(u, _)| u == id) {
            return Err(RestoreError::UnreadableCatalog {
                id: id.to_string(),
                why: why.to_string(),
            });
        }
    }
    for (id, why) in &s.unreadable {
        tracing::warn!(backup = %id, "a backup whose catalog cannot be read was left out: {why}");
    }
    let choice = target::choose(&s.model, &s.backups, req.backup.as_deref(), &req.target, timeline)?;
    let cat = match s.backup(&choice.backup.id) {
        Some(summary) => repo.load_catalog_matching(summary).await?,
        None => repo.load_catalog(&choice.backup.id).await?,
    };
    if cat.parent.is_some() {
        let chain = super::combined::load_chain(repo, cat, &s.backups).await?;
        let mut plan = plan_for(super::combined::combined_catalog(&chain), req)?;
        plan.chain = Some(std::sync::Arc::new(chain));
        plan.recovery = Some(choice);
        return Ok(plan);
    }
    let mut plan = plan_for(cat, req)?;
    plan.recovery = Some(choice);
    Ok(plan)
}

/// The plan for restoring `cat` (already chosen) as `req` asks.
pub fn plan_for(cat: BackupCatalog, req: &RestoreRequest) -> Result<RestorePlan, RestoreError> {
    let pgdata = req.pgdata.clone();
    if !pgdata.is_absolute() {
        return Err(RestoreError::BadDestination(pgdata.display().to_string()));
    }
    let spaces = tablespace_targets(&cat, &req.tablespace_map)?;
    let links = link_targets(&cat, &req.link_map)?;
    check_overlaps(&pgdata, &spaces, &links)?;

    let router = Router::new(&pgdata, &spaces, &links, &cat);
    let mut directories = Vec::new();
    for d in &cat.directories {
        if let Some(dest) = router.route(&d.path, Kind::Dir)? {
            directories.push((dest, d.mode));
        }
    }
    let mut plain_links = Vec::new();
    for l in &cat.symlinks {
        if let Some(dest) = router.route(&l.path, Kind::Link)? {
            tracing::info!(link = %l.path, target = %l.target, "the backup's link comes back as a plain directory (map it with --link-map to keep it a link)");
            plain_links.push(dest);
        }
    }
    let mut files = Vec::with_capacity(cat.files.len());
    let mut pg_control = None;
    for f in &cat.files {
        let dest = router.route(&f.path, Kind::File)?.ok_or_else(|| PathError::Unsafe {
            path: f.path.clone(),
            why: "a file where a link is",
        })?;
        if f.path == "global/pg_control" {
            let tmp = dest.with_name(PG_CONTROL_TMP)?;
            pg_control = Some(tmp.clone());
            files.push(tmp);
        } else {
            files.push(dest);
        }
    }
    let pg_control = pg_control.ok_or(RestoreError::NoPgControl(cat.id.clone()))?;

    let mut tablespaces: Vec<(u32, PathBuf)> = spaces.into_iter().collect();
    tablespaces.sort();
    let mut plan = RestorePlan {
        catalog: cat,
        request: req.clone(),
        pgdata,
        tablespaces,
        links,
        plain_links,
        directories,
        files,
        pg_control,
        resume: None,
        recovery: None,
        chain: None,
    };
    plan.resume = check_destinations(&plan)?;
    Ok(plan)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
}

/// Maps catalog paths to roots: `pg_tblspc/<oid>/…` to the tablespace, `OLD/…` of a mapped link to
/// its destination, the rest to the data directory.
struct Router {
    pgdata: Arc<PathBuf>,
    spaces: HashMap<u32, Arc<PathBuf>>,
    links: Vec<(String, Arc<PathBuf>)>,
    /// The backup's other links: nothing may be under them (PostgreSQL never sends such entries).
    plain: Vec<String>,
}

impl Router {
    fn new(pgdata: &Path, spaces: &HashMap<u32, PathBuf>, links: &[(String, PathBuf)], cat: &BackupCatalog) -> Router {
        let plain = cat
            .symlinks
            .iter()
            .filter(|l| !l.path.starts_with("pg_tblspc/") && !links.iter().any(|(o, _)| *o == l.path))
            .map(|l| format!("{}/", l.path))
            .collect();
        Router {
            plain,
            pgdata: Arc::new(pgdata.to_path_buf()),
            spaces: spaces.iter().map(|(o, p)| (*o, Arc::new(p.clone()))).collect(),
            links: links.iter().map(|(o, p)| (o.clone(), Arc::new(p.clone()))).collect(),
        }
    }

    /// `None`: the entry is a tablespace or mapped link itself, made from the plan.
    fn route(&self, path: &str, kind: Kind) -> Result<Option<Dest>, RestoreError> {
        validate(path)?;
        let unsafe_path = |why| {
            RestoreError::Path(PathError::Unsafe {
                path: path.to_string(),
                why,
            })
        };
        if let Some(rest) = path.strip_prefix("pg_tblspc/") {
            let (oid, inner) = match rest.split_once('/') {
                Some((o, i)) => (o, Some(i)),
                None => (rest, None),
            };
            if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) {
                return Err(unsafe_path("a tablespace oid that is not a number"));
            }
            let root = oid
                .parse::<u32>()
                .ok()
                .and_then(|o| self.spaces.get(&o))
                .ok_or_else(|| unsafe_path("a tablespace the catalog does not list"))?;
            return match (inner, kind) {
                (Some(inner), _) => Ok(Some(Dest::new(root.clone(), inner)?)),
                (None, Kind::File) => Err(unsafe_path("a file where a tablespace link is")),
                (None, _) => Ok(None),
            };
        }
        for (old, root) in &self.links {
            if path == old {
                return match kind {
                    Kind::Link => Ok(None),
                    _ => Err(unsafe_path("an entry where a mapped link is")),
                };
            }
            if let Some(inner) = path.strip_prefix(old.as_str()).and_then(|r| r.strip_prefix('/')) {
                return Ok(Some(Dest::new(root.clone(), inner)?));
            }
        }
        if self.plain.iter().any(|l| path.starts_with(l.as_str())) {
            return Err(unsafe_path("an entry under a link of the backup"));
        }
        Ok(Some(Dest::new(self.pgdata.clone(), path)?))
    }
}

/// Where each tablespace goes: its original location unless mapped.
fn tablespace_targets(cat: &BackupCatalog, mappings: &[String]) -> Result<HashMap<u32, PathBuf>, RestoreError> {
    let mut out = HashMap::new();
    for t in &cat.tablespaces {
        validate_absolute(&t.location)?;
        if out.insert(t.oid, PathBuf::from(&t.location)).is_some() {
            return Err(PathError::Unsafe {
                path: format!("pg_tblspc/{}", t.oid),
                why: "a tablespace listed twice",
            }
            .into());
        }
    }
    for m in mappings {
        let (old, new) = m.split_once('=').ok_or_else(|| RestoreError::BadMapping(m.clone()))?;
        validate_absolute(new).map_err(|_| RestoreError::BadMapping(m.clone()))?;
        let ts = cat
            .tablespaces
            .iter()
            .find(|t| t.oid.to_string() == old || t.location.trim_end_matches('/') == old.trim_end_matches('/'))
            .ok_or_else(|| RestoreError::UnknownTablespace(m.clone()))?;
        out.insert(ts.oid, PathBuf::from(new));
    }
    Ok(out)
}

/// `OLD=NEW` link mappings: OLD a link of the backup (outside `pg_tblspc`), NEW absolute.
fn link_targets(cat: &BackupCatalog, mappings: &[String]) -> Result<Vec<(String, PathBuf)>, RestoreError> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for m in mappings {
        let bad = || RestoreError::BadLinkMapping(m.clone());
        let (old, new) = m.split_once('=').ok_or_else(bad)?;
        let old = old.trim_end_matches('/');
        validate(old).map_err(|_| bad())?;
        validate_absolute(new).map_err(|_| bad())?;
        if old.starts_with("pg_tblspc/") || !cat.symlinks.iter().any(|l| l.path == old) {
            return Err(RestoreError::UnknownLink(m.clone()));
        }
        if out.iter().any(|(o, _)| o == old) {
            return Err(bad());
        }
        out.push((old.to_string(), PathBuf::from(new)));
    }
    Ok(out)
}

/// No destination may be inside another (a tablespace inside the data directory would let one
/// root write into another).
fn check_overlaps(
    pgdata: &Path,
    spaces: &HashMap<u32, PathBuf>,
    links: &[(String, PathBuf)],
) -> Result<(), RestoreError> {
    let mut all: Vec<&Path> = vec![pgdata];
    all.extend(spaces.values().map(PathBuf::as_path));
    all.extend(links.iter().map(|(_, p)| p.as_path()));
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err(RestoreError::Overlap {
                    a: a.to_path_buf(),
                    b: b.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Create {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether restore may write into the destinations; `Some` when it resumes an interrupted restore.
fn check_destinations(plan: &RestorePlan) -> Result<Option<Marker>, RestoreError> {
    let dirs = plan.roots();
    let resume = match marker::inspect(&plan.pgdata).map_err(io_err(&plan.pgdata))? {
        DirState::Fresh => None,
        DirState::Foreign => {
            return Err(RestoreError::NotEmpty {
                path: plan.pgdata.clone(),
                dirs: list(&dirs),
            })
        }
        DirState::Marked(None) => {
            return Err(RestoreError::MarkerUnreadable {
                path: plan.pgdata.clone(),
                dirs: list(&dirs),
            })
        }
        DirState::Marked(Some(m)) => {
            if m.writer_alive() {
                return Err(RestoreError::Busy {
                    path: plan.pgdata.clone(),
                    pid: m.pid,
                });
            }
            if !m.same_restore(&plan.marker()) {
                let mut theirs = vec![plan.pgdata.clone()];
                theirs.extend(m.tablespaces.iter().map(|(_, p)| p.clone()));
                theirs.extend(m.links.iter().map(|(_, p)| p.clone()));
                return Err(RestoreError::OtherRestore {
                    path: plan.pgdata.clone(),
                    backup: m.backup_id.clone(),
                    dirs: list(&theirs),
                });
            }
            Some(m)
        }
    };
    if resume.is_none() {
        for (oid, loc) in &plan.tablespaces {
            if !marker::dir_is_empty(loc).map_err(io_err(loc))? {
                let original = plan
                    .catalog
                    .tablespaces
                    .iter()
                    .find(|t| t.oid == *oid)
                    .map(|t| t.location.clone())
                    .unwrap_or_default();
                return Err(RestoreError::TablespaceNotEmpty {
                    oid: oid.to_string(),
                    original,
                    path: loc.clone(),
                });
            }
        }
        for (old, loc) in &plan.links {
            if !marker::dir_is_empty(loc).map_err(io_err(loc))? {
                return Err(RestoreError::LinkNotEmpty {
                    link: old.clone(),
                    path: loc.clone(),
                });
            }
        }
    }
    Ok(resume)
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| super::conf::sh_quote(&d.display().to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
