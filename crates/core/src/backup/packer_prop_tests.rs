//! Property tests for the packer, which parses the server's tar streams: valid archives split at
//! random points, random bytes, and mutated archives. Nothing may panic or buffer without bound,
//! and a mutated archive is either refused, or packed to what its bytes say, so that the check
//! against PostgreSQL's manifest accepts it only if the files are the original ones. Fixed seed
//! and bounded cases, so a run is repeatable and takes seconds.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use tokio::sync::mpsc;

use super::{append_manifest, pack, PackError, Packed};
use crate::backup::bundle::BundleWriter;
use crate::backup::manifest::Received;
use crate::format::Codec;
use crate::progress::Quiet;
use crate::protocol::BackupEvent;
use crate::storage::Storage;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7067_7661_756c_7424),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs the packer over `events` with an in-memory store.
fn run(rt: &tokio::runtime::Runtime, events: Vec<BackupEvent>) -> Result<Packed, PackError> {
    let (tx, rx) = mpsc::channel(events.len() + 1);
    for ev in events {
        tx.try_send(ev).expect("channel sized for every event");
    }
    drop(tx);
    let writer = BundleWriter::new(
        rt.handle().clone(),
        Storage::memory(),
        "b1",
        Codec::default(),
        None,
        4096,
    );
    pack(rx, writer, &Quiet)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a test runtime")
}

/// A tar archive as PostgreSQL writes it: a directory, files, a symlink.
fn tar_of(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o700);
    h.set_size(0);
    b.append_data(&mut h, "base", std::io::empty()).expect("tar dir");
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o600);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, &data[..]).expect("tar file");
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "pg_wal", "/wal/elsewhere").expect("tar link");
    b.into_inner().expect("tar end")
}

fn files() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    prop::collection::btree_map("base/[0-9]{1,5}", prop::collection::vec(any::<u8>(), 0..3000), 1..5)
}

/// The events of one base archive sent in chunks cut at `cuts`.
fn events(tar: &[u8], cuts: &[prop::sample::Index]) -> Vec<BackupEvent> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(tar.len() + 1)).collect();
    at.push(0);
    at.push(tar.len());
    at.sort_unstable();
    at.dedup();
    let mut ev = vec![BackupEvent::NewArchive {
        name: "base.tar".into(),
        tablespace_location: None,
    }];
    ev.extend(
        at.windows(2)
            .map(|w| BackupEvent::ArchiveData(Bytes::copy_from_slice(&tar[w[0]..w[1]]))),
    );
    ev
}

/// What the manifest would list for `files`, in `Received` form.
fn expected(files: &BTreeMap<String, Vec<u8>>) -> Vec<(String, u64, u32)> {
    files
        .iter()
        .map(|(p, d)| (p.clone(), d.len() as u64, crc32c::crc32c(d)))
        .collect()
}

fn packed_files(p: &Packed) -> Vec<(String, u64, u32)> {
    let mut v: Vec<_> = p
        .received
        .iter()
        .map(|(k, Received { size, crc32c })| (k.clone(), *size, *crc32c))
        .collect();
    v.sort();
    v
}

#[test]
fn valid_archives_split_anywhere_pack_to_their_files() {
    let rt = runtime();
    runner(64)
        .run(
            &(files(), prop::collection::vec(any::<prop::sample::Index>(), 0..6)),
            |(files, cuts)| {
                let packed =
                    run(&rt, events(&tar_of(&files), &cuts)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(packed_files(&packed), expected(&files));
                prop_assert_eq!(packed.directories.len(), 1);
                prop_assert_eq!(packed.symlinks.len(), 1);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn random_archive_bytes_never_panic() {
    let rt = runtime();
    runner(256)
        .run(&prop::collection::vec(any::<u8>(), 0..4096), |bytes| {
            let _ = run(&rt, events(&bytes, &[]));
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_archives_are_refused_or_packed_truthfully() {
    let rt = runtime();
    let strategy = (
        files(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    );
    runner(256)
        .run(&strategy, |(files, edits)| {
            let mut tar = tar_of(&files);
            for (at, byte) in edits {
                let i = at.index(tar.len());
                tar[i] = byte;
            }
            let Ok(packed) = run(&rt, events(&tar, &[])) else {
                return Ok(());
            };
            // Accepted: the manifest check against the original listing passes only if the
            // packed files are the original ones (a changed content byte changes the CRC).
            let mut listed = std::collections::HashMap::new();
            for (p, size, crc) in expected(&files) {
                listed.insert(p, Received { size, crc32c: crc });
            }
            let manifest_ok = listed.iter().all(|(p, r)| {
                packed
                    .received
                    .get(p)
                    .is_some_and(|got| got.size == r.size && got.crc32c == r.crc32c)
            });
            if manifest_ok {
                prop_assert_eq!(packed_files(&packed), expected(&files));
            }
            Ok(())
        })
        .unwrap();
}

/// PostgreSQL never sends GNU long-name or PAX members; one claiming a huge size must be refused
/// at its header, not read into memory.
#[test]
fn long_name_and_pax_members_are_refused() {
    let rt = runtime();
    for kind in [b'L', b'K', b'x', b'g'] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(1 << 40);
        h.set_path("././@LongLink").expect("path");
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[b'a'; 4096]);
        match run(&rt, events(&tar, &[])) {
            Err(PackError::Stream(msg)) => {
                assert!(msg.contains("unexpected tar member type"), "{msg}")
            }
            Err(other) => panic!("kind {}: {other}", kind as char),
            Ok(_) => panic!("kind {} accepted", kind as char),
        }
    }
}

#[test]
fn manifest_buffering_is_bounded() {
    let mut m = Vec::new();
    assert!(append_manifest(&mut m, b"0123456789", 16).is_ok());
    assert!(append_manifest(&mut m, b"012345", 16).is_ok());
    assert!(matches!(append_manifest(&mut m, b"x", 16), Err(PackError::Stream(_))));
    assert_eq!(m.len(), 16);
}

/// Random sequences of events (archives with random names, data, progress, manifests).
#[test]
fn random_event_sequences_never_panic() {
    let rt = runtime();
    let event = prop_oneof![
        prop_oneof![
            Just("base.tar".to_string()),
            Just("16384.tar".to_string()),
            "[a-z0-9.]{0,10}"
        ]
        .prop_map(|name| BackupEvent::NewArchive {
            name,
            tablespace_location: None
        }),
        prop::collection::vec(any::<u8>(), 0..1100).prop_map(|b| BackupEvent::ArchiveData(b.into())),
        any::<u64>().prop_map(BackupEvent::Progress),
        Just(BackupEvent::ManifestStart),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| BackupEvent::ManifestData(b.into())),
    ];
    runner(256)
        .run(&prop::collection::vec(event, 0..8), |events| {
            let _ = run(&rt, events);
            Ok(())
        })
        .unwrap();
}
