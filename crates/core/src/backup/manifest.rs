//! PostgreSQL's own `backup_manifest`, checked against what pgvault received.
//!
//! The server lists every file it sent with its size and a CRC-32C. Comparing that list with the
//! bytes that actually went through pgvault's pipeline catches a truncated stream, a tar parsing
//! mistake or a file that vanished, before the backup is declared complete. The manifest's own
//! SHA-256 trailer is checked too, and the manifest is stored beside the catalog so that
//! `pg_verifybackup` can be run on a restored directory.

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the server's backup_manifest is not valid: {0}")]
    Malformed(String),
    #[error("the server's backup_manifest fails its own checksum: the stream was damaged in transit")]
    ChecksumMismatch,
    #[error("file {path} is listed in the server's backup_manifest but was not in the backup stream")]
    Missing { path: String },
    #[error(
        "file {path}: the server's manifest says {expected}, pgvault received {found}; the backup stream was damaged"
    )]
    Mismatch {
        path: String,
        expected: String,
        found: String,
    },
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "Files")]
    files: Vec<RawFile>,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

/// What pgvault observed of one file.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub size: u64,
    pub crc32c: u32,
}

/// One file a manifest lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    /// Relative to the data directory (tablespaces under `pg_tblspc/<oid>/`); `Encoded-Path`
    /// entries decoded.
    pub path: String,
    pub size: u64,
    /// `(algorithm, hex checksum)` when the manifest records one.
    pub checksum: Option<(String, String)>,
}

/// Verifies the manifest's own SHA-256 trailer and returns the files it lists: the one reader
/// of PostgreSQL's manifest (backup checks it against the stream, verify against the catalog).
pub fn files(manifest: &[u8]) -> Result<Vec<ManifestFile>, ManifestError> {
    verify_trailer(manifest)?;
    let raw: RawManifest = serde_json::from_slice(manifest).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    raw.files
        .into_iter()
        .map(|f| {
            let path = match (f.path, f.encoded_path) {
                (Some(p), _) => p,
                (None, Some(hexed)) => {
                    let bytes = hex::decode(&hexed)
                        .map_err(|e| ManifestError::Malformed(format!("Encoded-Path {hexed}: {e}")))?;
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                (None, None) => return Err(ManifestError::Malformed("a file entry has no path".into())),
            };
            Ok(ManifestFile {
                path,
                size: f.size,
                checksum: f.algorithm.zip(f.checksum),
            })
        })
        .collect()
}

/// Verifies the manifest's trailer and checks every listed file against `received`
/// (keyed by the path relative to the data directory, tablespaces under `pg_tblspc/<oid>/`).
pub fn check(manifest: &[u8], received: &HashMap<String, Received>) -> Result<usize, ManifestError> {
    let mut checked = 0;
    for f in files(manifest)? {
        let got = received
            .get(&f.path)
            .ok_or_else(|| ManifestError::Missing { path: f.path.clone() })?;
        if got.size != f.size {
            return Err(ManifestError::Mismatch {
                path: f.path,
                expected: format!("{} bytes", f.size),
                found: format!("{} bytes", got.size),
            });
        }
        if let Some((_, checksum)) = f.checksum.filter(|(algorithm, _)| algorithm == "CRC32C") {
            // PostgreSQL prints the CRC's bytes in memory (little-endian) order.
            let found = hex::encode(got.crc32c.to_le_bytes());
            let expected = checksum.to_ascii_lowercase();
            if found != expected {
                return Err(ManifestError::Mismatch {
                    path: f.path,
                    expected: format!("CRC-32C {expected}"),
                    found: format!("CRC-32C {found}"),
                });
            }
        }
        checked += 1;
    }
    Ok(checked)
}

/// `body` (everything up to the checksum line) with PostgreSQL's SHA-256 trailer: manifests for
/// unit tests.
#[cfg(test)]
pub(crate) fn with_trailer(body: &str) -> Vec<u8> {
    let sum = hex::encode(Sha256::digest(body.as_bytes()));
    format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes()
}

/// The manifest ends with `"Manifest-Checksum": "<sha256 of everything before this line>"}`.
pub(crate) fn verify_trailer(manifest: &[u8]) -> Result<(), ManifestError> {
    let text = std::str::from_utf8(manifest).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    let marker = "\"Manifest-Checksum\": \"";
    let at = text
        .rfind(marker)
        .ok_or_else(|| ManifestError::Malformed("no Manifest-Checksum".into()))?;
    let rest = &text[at + marker.len()..];
    let expected = rest
        .get(..64)
        .ok_or_else(|| ManifestError::Malformed("short Manifest-Checksum".into()))?;
    let actual = hex::encode(Sha256::digest(&manifest[..at]));
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(ManifestError::ChecksumMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &str) -> Vec<u8> {
        with_trailer(&format!(
            "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{files}\n],\n"
        ))
    }

    #[test]
    fn checks_sizes_checksums_and_trailer() {
        let crc = crc32c::crc32c(b"hello");
        let m = manifest(&format!(
            "{{ \"Path\": \"base/1/1\", \"Size\": 5, \"Last-Modified\": \"x\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
            hex::encode(crc.to_le_bytes())
        ));
        let mut got = HashMap::new();
        got.insert("base/1/1".to_string(), Received { size: 5, crc32c: crc });
        assert_eq!(check(&m, &got).unwrap(), 1);

        got.insert(
            "base/1/1".to_string(),
            Received {
                size: 5,
                crc32c: crc ^ 1,
            },
        );
        assert!(matches!(check(&m, &got), Err(ManifestError::Mismatch { .. })));
        got.clear();
        assert!(matches!(check(&m, &got), Err(ManifestError::Missing { .. })));

        let mut damaged = m.clone();
        damaged[30] ^= 0x20;
        assert!(matches!(check(&damaged, &got), Err(ManifestError::ChecksumMismatch)));
    }
}

#[cfg(test)]
#[path = "manifest_prop_tests.rs"]
mod prop_tests;
