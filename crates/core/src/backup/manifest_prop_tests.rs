//! Property tests for the `backup_manifest` check: random bytes, random valid manifests, and
//! mutations of either the manifest or what pgvault received. Nothing may panic, and a manifest
//! whose listed content was changed, or a received file whose size or CRC differs from the
//! listing, must be refused. Fixed seed and bounded cases, so a run is repeatable and takes seconds.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use sha2::{Digest, Sha256};

use super::{check, ManifestError, Received};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7067_7661_756c_7423),
        failure_persistence: None,
        ..Config::default()
    })
}

const MARKER: &str = "\"Manifest-Checksum\": \"";

/// A manifest as PostgreSQL writes it, listing `files` (path, size, crc, hex-encoded path?).
/// Returns the bytes and the offset where the trailer (the part not covered by the SHA) begins.
fn manifest(files: &[(String, u64, u32, bool)]) -> (Vec<u8>, usize) {
    let entries: Vec<String> = files
        .iter()
        .map(|(path, size, crc, encode)| {
            let name = if *encode {
                format!("\"Encoded-Path\": \"{}\"", hex::encode(path.as_bytes()))
            } else {
                format!("\"Path\": \"{path}\"")
            };
            format!(
                "{{ {name}, \"Size\": {size}, \"Last-Modified\": \"2024-01-01 00:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                hex::encode(crc.to_le_bytes())
            )
        })
        .collect();
    let body = format!(
        "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{}\n],\n",
        entries.join(",\n")
    );
    let sum = hex::encode(Sha256::digest(body.as_bytes()));
    (format!("{body}{MARKER}{sum}\"}}\n").into_bytes(), body.len())
}

fn files() -> impl Strategy<Value = Vec<(String, u64, u32, bool)>> {
    prop::collection::btree_map(
        "[a-z_]{1,8}(/[0-9]{1,5}){0,2}",
        (0u64..(1 << 40), any::<u32>(), any::<bool>()),
        1..6,
    )
    .prop_map(|m| m.into_iter().map(|(p, (s, c, e))| (p, s, c, e)).collect())
}

fn received(files: &[(String, u64, u32, bool)]) -> HashMap<String, Received> {
    files
        .iter()
        .map(|(p, size, crc, _)| {
            (
                p.clone(),
                Received {
                    size: *size,
                    crc32c: *crc,
                },
            )
        })
        .collect()
}

#[test]
fn random_bytes_never_panic() {
    let got = received(&[("base/1/1".into(), 5, 7, false)]);
    runner(512)
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            let _ = check(&bytes, &got);
            let mut framed = bytes.clone();
            framed.extend_from_slice(MARKER.as_bytes());
            framed.extend_from_slice(hex::encode(Sha256::digest(&bytes)).as_bytes());
            framed.extend_from_slice(b"\"}\n");
            // The trailer is right, so only the JSON parser stands between random bytes and a verdict.
            prop_assert!(check(&framed, &got).is_err());
            Ok(())
        })
        .unwrap();
}

#[test]
fn valid_manifests_pass() {
    runner(256)
        .run(&files(), |files| {
            let (m, _) = manifest(&files);
            prop_assert_eq!(check(&m, &received(&files)).ok(), Some(files.len()));
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_manifests_are_refused_or_unchanged_in_meaning() {
    let strategy = (
        files(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    );
    runner(512)
        .run(&strategy, |(files, edits)| {
            let (original, body_len) = manifest(&files);
            let mut m = original.clone();
            for (at, byte) in edits {
                let i = at.index(m.len());
                m[i] = byte;
            }
            // Only the trailer (its hex case, the closing bytes) may change without a refusal,
            // and then the listing it vouches for is the original one.
            if let Ok(n) = check(&m, &received(&files)) {
                prop_assert_eq!(&m[..body_len], &original[..body_len]);
                prop_assert_eq!(n, files.len());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_received_sizes_and_checksums_are_refused() {
    let strategy = (files(), any::<prop::sample::Index>(), any::<bool>(), 1u64..u64::MAX);
    runner(256)
        .run(&strategy, |(files, which, size, delta)| {
            let (m, _) = manifest(&files);
            let mut got = received(&files);
            let path = &files[which.index(files.len())].0;
            let Some(r) = got.get_mut(path) else {
                return Err(TestCaseError::fail("generated path missing"));
            };
            if size {
                r.size = r.size.wrapping_add(delta);
            } else {
                r.crc32c ^= (delta as u32).max(1);
            }
            let result = check(&m, &got);
            let refused = matches!(result, Err(ManifestError::Mismatch { .. }));
            prop_assert!(refused, "{:?}", result);
            got.remove(path);
            let missing = matches!(check(&m, &got), Err(ManifestError::Missing { .. }));
            prop_assert!(missing, "a missing file was not reported");
            Ok(())
        })
        .unwrap();
}
