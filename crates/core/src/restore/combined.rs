//! The parts of a chain restore around the unpacking: loading the chain's catalogs (newest
//! first, down to the full backup), and after the files are written, `backup_label` without its
//! `INCREMENTAL FROM` lines and a new `backup_manifest` describing the combined result (the
//! newest backup's manifest with each reconstructed file's path, size and CRC-32C replaced and
//! the SHA-256 trailer recomputed), so that `pg_verifybackup` accepts the restored directory.

use std::collections::HashMap;
use std::io::Read;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::chain::{combine, ChainError, Combined};
use super::paths::{self, Dest};
use super::RestoreError;
use crate::backup::incremental::{strip_label, strip_prefix};
use crate::repository::summary::BackupSummary;
use crate::repository::{BackupCatalog, Repository};
use futures::StreamExt;

/// A chain to restore: its catalogs (newest first) and the combination plan.
#[derive(Clone, Debug)]
pub struct ChainPlan {
    pub links: Vec<BackupCatalog>,
    pub combined: Combined,
}

impl ChainPlan {
    pub fn ids(&self) -> Vec<String> {
        self.links.iter().map(|c| c.id.clone()).collect()
    }
}

/// The longest chain followed (a loop in forged catalogs must not spin forever).
const MAX_CHAIN: usize = 1000;

/// Loads the catalogs from `newest` down to its full backup and plans the combination.
///
/// The links the backup index (`known`) names are read concurrently, up to 8 at a time, instead
/// of one round trip per link after another; the walk then follows each catalog's own `parent`,
/// so the index only decides what is fetched early, and a link it does not name (or that could
/// not be read early) is read, and its absence reported, as before.
pub async fn load_chain(
    repo: &Repository,
    newest: BackupCatalog,
    known: &[BackupSummary],
) -> Result<ChainPlan, RestoreError> {
    let ids = ancestors(newest.parent.as_deref(), known);
    let fetched: Vec<_> = futures::stream::iter(ids.iter().map(|id| repo.load_catalog(id)))
        .buffered(8)
        .collect()
        .await;
    let mut early: HashMap<String, BackupCatalog> = ids
        .into_iter()
        .zip(fetched)
        .filter_map(|(id, r)| r.ok().map(|c| (id, c)))
        .collect();
    let mut links = vec![newest];
    while let Some(parent) = links.last().and_then(|c| c.parent.clone()) {
        let child = links.last().map(|c| c.id.clone()).unwrap_or_default();
        if links.len() >= MAX_CHAIN || !crate::repository::catalog::is_backup_id(&parent) {
            return Err(ChainError::NoFull(links[0].id.clone()).into());
        }
        if let Some(cat) = early.remove(&parent).filter(|c| c.id == parent) {
            links.push(cat);
            continue;
        }
        if !repo.catalog_exists(&parent).await? {
            return Err(ChainError::MissingParent { child, parent }.into());
        }
        links.push(repo.load_catalog(&parent).await?);
    }
    let combined = combine(&links)?;
    Ok(ChainPlan { links, combined })
}

/// The ancestors of a backup whose parent is `parent`, as the backup index names them (nearest
/// first, at most [`MAX_CHAIN`], stopping at a loop or a backup the index does not list).
fn ancestors(parent: Option<&str>, known: &[BackupSummary]) -> Vec<String> {
    let by_id: HashMap<&str, &BackupSummary> = known.iter().map(|b| (b.id.as_str(), b)).collect();
    let mut out: Vec<String> = Vec::new();
    let mut next = parent;
    while let Some(id) = next {
        if out.len() >= MAX_CHAIN || out.iter().any(|o| o == id) {
            break;
        }
        let Some(b) = by_id.get(id) else {
            break;
        };
        out.push(id.to_string());
        next = b.parent.as_deref();
    }
    out
}

/// The combined result's catalog: the newest link's, with the combined file list and size.
pub fn combined_catalog(chain: &ChainPlan) -> BackupCatalog {
    let mut cat = chain.links[0].clone();
    cat.files = chain.combined.files.clone();
    cat.size = cat.files.iter().map(|f| f.size).sum();
    cat
}

/// CRC-32C and size of a restored file, read back.
pub fn checksum(d: &Dest) -> Result<(u64, u32), RestoreError> {
    let err = |source| RestoreError::Create { path: d.full(), source };
    let mut f = paths::open_read(d)?.ok_or_else(|| err(std::io::ErrorKind::NotFound.into()))?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            return Ok((size, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
}

/// Rewrites the restored `backup_label` without `INCREMENTAL FROM` lines.
pub fn fix_label(label: &Dest) -> Result<(), RestoreError> {
    let err = |source| RestoreError::Create {
        path: label.full(),
        source,
    };
    let Some(mut f) = paths::open_read(label)? else {
        return Ok(());
    };
    let mut text = Vec::new();
    f.read_to_end(&mut text).map_err(err)?;
    let stripped = strip_label(&text);
    let f = paths::open_nofollow(label)?;
    f.set_len(0).map_err(err)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &stripped, 0).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The manifest of the combined result. `changed` are the output files whose content differs
/// from the newest backup's stored file (reconstructed files, `backup_label`), by output path,
/// with their size and CRC-32C.
pub fn combined_manifest(newest: &[u8], changed: &HashMap<String, (u64, u32)>) -> Result<Vec<u8>, RestoreError> {
    let bad = |why: String| RestoreError::Internal(format!("the newest backup's backup_manifest: {why}"));
    let doc: Value = serde_json::from_slice(newest).map_err(|e| bad(e.to_string()))?;
    let obj = doc.as_object().ok_or_else(|| bad("not an object".into()))?;
    let mut body = String::from("{ ");
    let version = obj
        .get("PostgreSQL-Backup-Manifest-Version")
        .ok_or_else(|| bad("no version".into()))?;
    body.push_str(&format!("\"PostgreSQL-Backup-Manifest-Version\": {version},\n"));
    if let Some(sysid) = obj.get("System-Identifier") {
        body.push_str(&format!("\"System-Identifier\": {sysid},\n"));
    }
    body.push_str("\"Files\": [");
    let files = obj
        .get("Files")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no Files".into()))?;
    for (i, f) in files.iter().enumerate() {
        let mut f = f.clone();
        let path = f.get("Path").and_then(Value::as_str).unwrap_or_default().to_string();
        let out = strip_prefix(&path).unwrap_or(path);
        if let Some(&(size, crc)) = changed.get(&out) {
            f["Path"] = Value::String(out);
            f["Size"] = Value::from(size);
            f["Checksum-Algorithm"] = Value::String("CRC32C".into());
            f["Checksum"] = Value::String(hex::encode(crc.to_le_bytes()));
        }
        body.push_str(if i == 0 { "\n" } else { ",\n" });
        body.push_str(&serde_json::to_string(&f).map_err(|e| bad(e.to_string()))?);
    }
    body.push_str("\n],\n\"WAL-Ranges\": [");
    let ranges = obj
        .get("WAL-Ranges")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, r) in ranges.iter().enumerate() {
        body.push_str(if i == 0 { "\n" } else { ",\n" });
        body.push_str(&serde_json::to_string(r).map_err(|e| bad(e.to_string()))?);
    }
    body.push_str("\n],\n");
    let sum = hex::encode(Sha256::digest(body.as_bytes()));
    body.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
    Ok(body.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::{verify_trailer, with_trailer};

    #[test]
    fn the_combined_manifest_renames_reconstructed_files_and_has_a_valid_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::sync::Arc::new(dir.path().to_path_buf());
        std::fs::create_dir_all(dir.path().join("base/5")).unwrap();
        std::fs::write(dir.path().join("base/5/16384"), vec![7u8; 8192]).unwrap();
        let newest = with_trailer(
            "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 7,\n\"Files\": [\n\
             { \"Path\": \"base/5/INCREMENTAL.16384\", \"Size\": 12, \"Last-Modified\": \"x\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" },\n\
             { \"Path\": \"PG_VERSION\", \"Size\": 3, \"Last-Modified\": \"x\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"11111111\" }\n],\n\
             \"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/1\", \"End-LSN\": \"0/2\" }\n],\n",
        );
        let dest = Dest::new(root, "base/5/16384").unwrap();
        let changed = HashMap::from([("base/5/16384".to_string(), checksum(&dest).unwrap())]);
        let out = combined_manifest(&newest, &changed).unwrap();
        verify_trailer(&out).unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["System-Identifier"], 7);
        let f = &doc["Files"][0];
        assert_eq!(f["Path"], "base/5/16384");
        assert_eq!(f["Size"], 8192);
        let crc = crc32c::crc32c(&vec![7u8; 8192]);
        assert_eq!(f["Checksum"], hex::encode(crc.to_le_bytes()));
        assert_eq!(
            doc["Files"][1]["Checksum"], "11111111",
            "unchanged files keep their entry"
        );
        assert_eq!(doc["WAL-Ranges"][0]["Start-LSN"], "0/1");
    }
}
