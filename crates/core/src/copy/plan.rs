//! What the target lacks: a pure function of the source's and the target's listings.
//!
//! Kept apart from the copying itself so that the rules (which objects are already there,
//! which bundles of an interrupted run can be reused, which WAL a backup needs before its
//! catalog may be stored) can be tested without stores.

use std::collections::HashMap;

use crate::repository::catalog::Piece;
use crate::repository::gaps::WalGapMarker;
use crate::repository::{layout, BackupCatalog, ClusterIdentity};
use crate::storage::ObjectInfo;
use crate::timeline::{ArchiveModel, BackupPoint};
use crate::wal::WalFileName;

use super::PlanItem;

/// How an object is checked while it streams through.
#[derive(Clone, Debug)]
pub(super) enum Check {
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
    Bundle { pieces: Vec<(String, Piece)>, size: u64 },
}

/// One object to copy.
#[derive(Clone, Debug)]
pub(super) struct Job {
    pub key: String,
    pub size: u64,
    pub check: Check,
    /// Store create-if-absent (WAL); otherwise replace (a bundle of a failed earlier copy).
    pub create_only: bool,
}

/// The WAL objects and declared gaps the target lacks.
#[derive(Debug, Default)]
pub(super) struct WalPlan {
    pub jobs: Vec<Job>,
    pub items: Vec<PlanItem>,
    /// WAL objects already in the target.
    pub present: usize,
    /// Gap markers to store in the target, so that it names the same holes as the source.
    pub gaps: Vec<WalGapMarker>,
    /// Gap markers already in the target.
    pub gaps_present: usize,
}

/// The source's declared gaps (`gaps/<tli>/<first>-<last>`) the target lacks. By key: a marker
/// names one dropped run, so one already in the target is the same hole (a marker is never
/// replaced by copy, so running it again stores nothing).
pub(super) fn plan_gaps(source: &[WalGapMarker], present: &HashMap<String, u64>) -> (Vec<WalGapMarker>, usize) {
    let (there, missing): (Vec<&WalGapMarker>, Vec<&WalGapMarker>) = source
        .iter()
        .partition(|m| present.contains_key(&layout::wal_gap_key(&m.first, &m.last)));
    (missing.into_iter().cloned().collect(), there.len())
}

/// Every archived WAL object of the source that the target does not hold (by key: a WAL
/// object is never replaced, so its size is not compared).
pub(super) fn plan_wal(
    source_wal: &[(WalFileName, ObjectInfo)],
    present: &HashMap<String, u64>,
    cluster: &ClusterIdentity,
) -> WalPlan {
    let mut plan = WalPlan::default();
    for (name, info) in source_wal {
        if present.contains_key(&info.key) {
            plan.present += 1;
            continue;
        }
        plan.items.push(PlanItem::Wal {
            name: name.to_string(),
            bytes: info.size,
        });
        let check = if name.has_page_header() {
            Check::Segment {
                name: *name,
                cluster: cluster.clone(),
            }
        } else {
            Check::Opens
        };
        plan.jobs.push(Job {
            key: info.key.clone(),
            size: info.size,
            check,
            create_only: true,
        });
    }
    plan
}

/// What one backup the target lacks needs copied.
#[derive(Debug)]
pub(super) struct BackupPlan {
    /// Bundles and manifest still to copy (the catalog is copied last, separately).
    pub jobs: Vec<Job>,
    /// Bundles and manifest already in the target with the source's size.
    pub reused: usize,
    pub item: PlanItem,
}

/// The objects of backup `cat` (whose objects in the source are `stored`, key → size) that
/// the target (`present`) lacks or holds with another size (a failed earlier copy).
pub(super) fn plan_backup(
    cat: &BackupCatalog,
    stored: &HashMap<String, u64>,
    present: &HashMap<String, u64>,
) -> BackupPlan {
    let mut pieces: HashMap<u32, Vec<(String, Piece)>> = HashMap::new();
    for f in &cat.files {
        for p in &f.pieces {
            pieces.entry(p.bundle).or_default().push((f.path.clone(), p.clone()));
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
    let mut jobs = Vec::new();
    let mut reused = 0usize;
    for (key, check) in wanted {
        // A missing source object is reported when its copy is attempted.
        let size = stored.get(&key).copied();
        if size.is_some() && present.get(&key).copied() == size {
            reused += 1;
            continue;
        }
        jobs.push(Job {
            key,
            size: size.unwrap_or(0),
            check,
            create_only: false,
        });
    }
    let catalog_bytes = stored.get(&layout::catalog_key(&cat.id)).copied().unwrap_or(0);
    let item = PlanItem::Backup {
        id: cat.id.clone(),
        objects: jobs.len() + 1,
        bytes: jobs.iter().map(|j| j.size).sum::<u64>() + catalog_bytes,
        objects_present: reused,
    };
    BackupPlan { jobs, reused, item }
}

/// The WAL segments backup `cat` needs to become consistent, as the archive model says
/// recovery reads them (following a timeline switch during the backup); none when the WAL is
/// inside the backup.
pub(super) fn needed_wal(model: &ArchiveModel, backup: &BackupPoint) -> Vec<WalFileName> {
    if backup.wal_included {
        return Vec::new();
    }
    model.consistency_segments(backup)
}

/// The names of `needed` that the target (`present`) lacks.
pub(super) fn missing_wal(needed: &[WalFileName], present: &HashMap<String, u64>) -> Vec<String> {
    needed
        .iter()
        .filter(|n| !present.contains_key(&layout::wal_key(n)))
        .map(|n| n.to_string())
        .collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
