//! Reading one backup's objects back: every bundle through the one bundle verifier
//! ([`walk_bundle`]) and the stored `backup_manifest` against the catalog.
//!
//! Bundles are streamed (a download channel of a few chunks and one 256 KiB buffer per bundle)
//! and at most `parallel` are open at once, so memory stays bounded whatever the backup's size.
//! A failure of the store itself (unreachable, denied) is a [`VerifyError`]: verify could not
//! run. Anything wrong with what the store returned is a [`Finding`].

use std::collections::{BTreeMap, HashMap};

use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

use crate::format::{into_format_error, FormatError};
use crate::repository::catalog::{BackupCatalog, Piece};
use crate::repository::walk::{walk_bundle, WalkError};
use crate::repository::{Repository, RepositoryError};
use crate::verify::report::Finding;
use crate::verify::{Tally, VerifyError};

/// Verifies every bundle and the manifest of backup `id`; returns what is wrong with them.
pub async fn verify_backup(
    repo: &Repository,
    id: &str,
    parallel: usize,
    tally: &Tally,
) -> Result<Vec<Finding>, VerifyError> {
    let cat = match repo.load_catalog(id).await {
        Ok(c) => c,
        Err(RepositoryError::Storage(e)) => return Err(RepositoryError::Storage(e).into()),
        Err(e @ RepositoryError::Object { .. }) if is_store_failure(&e) => return Err(e.into()),
        Err(e) => {
            return Ok(vec![Finding::CatalogUnreadable {
                backup: id.to_string(),
                detail: e.to_string(),
            }])
        }
    };
    tally.add_backup();
    let mut findings = Vec::new();
    let by_bundle = pieces_by_bundle(&cat);
    let results: Vec<Result<Option<Finding>, VerifyError>> = stream::iter(cat.bundles.iter())
        .map(|b| {
            let pieces = by_bundle.get(&b.id).cloned().unwrap_or_default();
            verify_bundle(repo, id, b.id, b.size, b.stored_size, pieces, tally)
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    for r in results {
        findings.extend(r?);
    }
    findings.extend(verify_manifest(repo, &cat, tally).await?);
    Ok(findings)
}

/// A storage or I/O failure wrapped in an object error: the store failed, not the object.
pub(crate) fn is_store_failure(e: &RepositoryError) -> bool {
    matches!(
        e,
        RepositoryError::Storage(_)
            | RepositoryError::Object {
                source: FormatError::Io(_),
                ..
            }
    )
}

/// Each bundle's pieces with the path of their file, sorted by bundle offset.
fn pieces_by_bundle(cat: &BackupCatalog) -> HashMap<u32, Vec<(String, Piece)>> {
    let mut out: HashMap<u32, Vec<(String, Piece)>> = HashMap::new();
    for f in &cat.files {
        for p in &f.pieces {
            out.entry(p.bundle).or_default().push((f.path.clone(), p.clone()));
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|(_, p)| p.bundle_offset);
    }
    out
}

async fn verify_bundle(
    repo: &Repository,
    id: &str,
    bundle: u32,
    size: u64,
    stored_size: u64,
    pieces: Vec<(String, Piece)>,
    tally: &Tally,
) -> Result<Option<Finding>, VerifyError> {
    let damaged = |file: Option<String>, offset: Option<u64>, detail: String| {
        Ok(Some(Finding::BundleDamaged {
            backup: id.to_string(),
            bundle,
            file,
            offset,
            detail,
        }))
    };
    let mut obj = match repo.open_bundle(id, bundle).await {
        Ok(o) => o,
        Err(RepositoryError::Storage(e)) if e.is_not_found() => {
            return Ok(Some(Finding::BundleMissing {
                backup: id.to_string(),
                bundle,
            }))
        }
        Err(e) if is_store_failure(&e) => return Err(e.into()),
        Err(e) => return damaged(None, None, e.to_string()),
    };
    let (paths, ps): (Vec<String>, Vec<Piece>) = pieces.into_iter().unzip();
    let (walked, reading) = tokio::task::spawn_blocking(move || {
        // The piece last handed over, and whether it was complete: when the object fails to
        // authenticate or decompress, the file being read is the one to name.
        let mut last: Option<(usize, bool)> = None;
        let track = |i: usize, p: &Piece, done: u64, b: &[u8]| {
            last = Some((i, done + b.len() as u64 >= p.len));
            Ok::<(), std::convert::Infallible>(())
        };
        let walked = walk_bundle(&mut obj, &ps, Some(size), track);
        let reading = match last {
            Some((i, true)) => i + 1,
            Some((i, false)) => i,
            None => 0,
        };
        (walked, reading)
    })
    .await
    .map_err(|e| VerifyError::Internal(format!("bundle check task: {e}")))?;
    tally.add_bundle(stored_size);
    match walked {
        Ok(n) => {
            tally.add_plain(n);
            Ok(None)
        }
        Err(WalkError::Read(e)) => match into_format_error(e) {
            FormatError::Io(e) => Err(VerifyError::Read {
                what: format!("bundle {bundle} of backup {id}"),
                detail: e.to_string(),
            }),
            other => damaged(paths.get(reading).cloned(), None, other.to_string()),
        },
        Err(WalkError::Checksum {
            index,
            offset,
            expected,
            found,
        }) => damaged(
            paths.get(index).cloned(),
            Some(offset),
            format!("SHA-256 mismatch (catalog {expected}, read {found})"),
        ),
        Err(e) => damaged(None, None, e.to_string()),
    }
}

/// The stored `backup_manifest`: present when the catalog records one, its SHA-256 the
/// catalog's, PostgreSQL's manifest JSON, and listing the catalog's files with their sizes.
async fn verify_manifest(repo: &Repository, cat: &BackupCatalog, tally: &Tally) -> Result<Vec<Finding>, VerifyError> {
    let Some(expected) = &cat.manifest_sha256 else {
        return Ok(Vec::new());
    };
    let damaged = |detail: String| {
        Ok(vec![Finding::ManifestDamaged {
            backup: cat.id.clone(),
            detail,
        }])
    };
    let raw = match repo.get_manifest(&cat.id).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Ok(vec![Finding::ManifestMissing { backup: cat.id.clone() }]);
        }
        Err(e) if is_store_failure(&e) => return Err(e.into()),
        Err(e) => return damaged(e.to_string()),
    };
    tally.add_manifest(raw.len() as u64);
    let found = hex::encode(Sha256::digest(&raw));
    if !found.eq_ignore_ascii_case(expected) {
        return damaged(format!("SHA-256 {found}, the catalog records {expected}"));
    }
    match manifest_mismatch(cat, &raw) {
        Some(detail) => damaged(detail),
        None => Ok(Vec::new()),
    }
}

/// Why the manifest does not describe the catalog's files, if it does not.
pub(crate) fn manifest_mismatch(cat: &BackupCatalog, raw: &[u8]) -> Option<String> {
    let files = match crate::backup::manifest::files(raw) {
        Ok(f) => f,
        Err(e) => return Some(e.to_string()),
    };
    let sizes: BTreeMap<&str, u64> = cat.files.iter().map(|f| (f.path.as_str(), f.size)).collect();
    for f in files {
        let path = f.path;
        match sizes.get(path.as_str()) {
            None => return Some(format!("lists {path}, which the catalog does not")),
            Some(&s) if s != f.size => {
                return Some(format!("{path}: {} bytes in the manifest, {s} in the catalog", f.size))
            }
            Some(_) => {}
        }
    }
    None
}
