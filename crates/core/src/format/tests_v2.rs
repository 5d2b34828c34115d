//! Tests of format version 2: identity binding (an object opened under another repository id
//! or key fails, for sealed and unsealed objects, through every entry point), the metadata
//! block (round trip, bounds, header-only reads, tampering) and property tests that feed random
//! and mutated bytes to the header and chunk parsers.

use std::io::Read;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};

use crate::format::*;

const PASS: &[u8] = b"correct horse battery staple";
const REPO: &str = "0b3c1a9e-5f7d-4d2a-9a51-6c1f2e3d4b5a";
const KEY: &str = "wal/0000000100000000/000000010000000000000003";

fn new_key() -> MasterKey {
    let p = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };
    Keyring::create(PASS, p).expect("create keyring").1
}

fn small_codec(compression: Compression) -> Codec {
    Codec {
        compression,
        zstd_level: 3,
        zstd_workers: 0,
        chunk_size: 1024,
    }
}

fn id(key: &str) -> ObjectIdentity<'_> {
    ObjectIdentity::new(REPO, key)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8 ^ (i / 700) as u8).collect()
}

#[test]
fn v2_round_trip_every_combination() {
    let key = new_key();
    for k in [None, Some(&key)] {
        for c in [Compression::None, Compression::Zstd] {
            for len in [0, 1, 1023, 1024, 1025, 5000] {
                for meta in [None, Some(&b"{\"first\":1}"[..]), Some(&[][..])] {
                    let d = data(len);
                    let obj = seal_bound(&d, None, &small_codec(c), k, id(KEY), meta).expect("seal");
                    assert_eq!(&obj[..8], MAGIC_V2);
                    let o = open_object(&obj, k, Some(id(KEY))).expect("open");
                    assert_eq!(o.data, d);
                    assert_eq!(o.version, 2);
                    assert_eq!(o.metadata.as_deref(), meta);
                    assert_eq!(
                        read_metadata(&obj, k, id(KEY)).expect("metadata"),
                        meta.map(<[u8]>::to_vec)
                    );
                }
            }
        }
    }
}

#[test]
fn moved_or_swapped_objects_fail_to_open() {
    let key = new_key();
    let others = [
        ObjectIdentity::new(REPO, "wal/0000000100000000/000000010000000000000004"),
        ObjectIdentity::new(REPO, "wal/0000000200000000/000000020000000000000003"),
        ObjectIdentity::new(REPO, "wal/00000002.history"),
        ObjectIdentity::new(REPO, "backups/20261123-101500F/catalog"),
        ObjectIdentity::new("another-repository", KEY),
    ];
    for k in [None, Some(&key)] {
        for meta in [None, Some(&b"m"[..])] {
            let obj = seal_bound(&data(3000), None, &small_codec(Compression::Zstd), k, id(KEY), meta).expect("seal");
            for other in others {
                let e = open_object(&obj, k, Some(other)).expect_err("opened under another identity");
                assert!(matches!(e, FormatError::NotThisObject { .. }), "{e:?}");
                assert!(e.to_string().contains("moved or swapped"), "{e}");
                if meta.is_some() {
                    assert!(matches!(
                        read_metadata(&obj, k, other),
                        Err(FormatError::NotThisObject { .. })
                    ));
                }
            }
            // Without an identity a v2 object is refused, never read unauthenticated.
            assert!(matches!(open_bytes(&obj, k), Err(FormatError::IdentityRequired)));
        }
    }
}

#[test]
fn v1_objects_stay_readable_through_the_v2_reader() {
    let key = new_key();
    for k in [None, Some(&key)] {
        let d = data(2500);
        let obj = seal_bytes(&d, &small_codec(Compression::Zstd), k).expect("seal v1");
        assert_eq!(&obj[..8], MAGIC);
        let o = open_object(&obj, k, Some(id(KEY))).expect("v1 under any identity");
        assert_eq!((o.data, o.version, o.metadata), (d, 1, None));
        assert_eq!(read_metadata(&obj, k, id(KEY)).expect("v1 metadata"), None);
    }
}

#[test]
fn metadata_bounds_and_header_only_reads() {
    let key = new_key();
    let big = vec![7u8; MAX_METADATA_LEN + 1];
    let e = seal_bound(
        b"x",
        None,
        &small_codec(Compression::None),
        Some(&key),
        id(KEY),
        Some(&big),
    );
    assert!(matches!(e, Err(FormatError::MetadataTooLarge { .. })));
    let max = vec![9u8; MAX_METADATA_LEN];
    let obj = seal_bound(
        &data(100_000),
        None,
        &small_codec(Compression::None),
        Some(&key),
        id(KEY),
        Some(&max),
    )
    .expect("seal");
    // The header alone is enough; the prefix bound always suffices.
    let prefix = &obj[..MAX_HEADER_LEN.min(obj.len())];
    assert_eq!(
        read_metadata(prefix, Some(&key), id(KEY)).expect("prefix"),
        Some(max.clone())
    );
    let cut = &obj[..FIXED_LEN + SEALED_EXTRA_LEN + 10];
    assert!(matches!(
        read_metadata(cut, Some(&key), id(KEY)),
        Err(FormatError::Truncated { .. })
    ));
    // The metadata of an encrypted object is not in the clear.
    assert!(!obj.windows(64).any(|w| w == &max[..64]));
}

#[test]
fn metadata_tampering_is_detected() {
    let key = new_key();
    for k in [None, Some(&key)] {
        let obj = seal_bound(
            &data(2000),
            None,
            &small_codec(Compression::None),
            k,
            id(KEY),
            Some(b"restore points"),
        )
        .expect("seal");
        let start = FIXED_LEN + if k.is_some() { SEALED_EXTRA_LEN } else { 0 };
        for at in start..start + 4 + 14 + 16 {
            let mut o = obj.clone();
            o[at] ^= 0x01;
            assert!(open_object(&o, k, Some(id(KEY))).is_err(), "flip at {at} accepted");
            assert!(read_metadata(&o, k, id(KEY)).is_err(), "metadata flip at {at} accepted");
        }
        // Clearing the metadata flag does not turn the object into one without metadata.
        let mut o = obj.clone();
        o[11] = 0;
        assert!(open_object(&o, k, Some(id(KEY))).is_err());
    }
}

#[test]
fn unknown_v2_flags_are_refused() {
    let obj = seal_bound(b"abc", None, &small_codec(Compression::None), None, id(KEY), None).expect("seal");
    let mut o = obj.clone();
    o[10] = 0x80;
    assert!(matches!(
        open_object(&o, None, Some(id(KEY))),
        Err(FormatError::UnsupportedFeature { .. })
    ));
}

#[test]
fn streaming_writer_and_reader_v2() {
    let key = new_key();
    let d = data(50_000);
    let mut w = ObjectWriter::new_bound(
        Vec::new(),
        &small_codec(Compression::Zstd),
        Some(&key),
        id(KEY),
        Some(b"m"),
    )
    .expect("writer");
    std::io::Write::write_all(&mut w, &d).expect("write");
    let (obj, _) = w.finish().expect("finish");
    let mut r = ObjectReader::open(&obj[..], Some(&key), Some(id(KEY))).expect("reader");
    assert_eq!(r.metadata(), Some(&b"m"[..]));
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read");
    assert_eq!(out, d);
}

fn runner(cases: u32, seed: u8) -> TestRunner {
    let config = PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]))
}

#[test]
fn prop_random_bytes_never_panic_or_open() {
    let key = new_key();
    let mut r = runner(400, 1);
    r.run(
        &(proptest::collection::vec(any::<u8>(), 0..3000), any::<bool>()),
        |(bytes, v2)| {
            // A valid magic makes the parser go further than the first check.
            let mut b = bytes;
            if b.len() >= 8 && v2 {
                b[..8].copy_from_slice(MAGIC_V2);
            }
            prop_assert!(open_object(&b, Some(&key), Some(id(KEY))).is_err());
            prop_assert!(open_object(&b, None, Some(id(KEY)))
                .map(|o| o.data.len() < 3000)
                .unwrap_or(true));
            let _ = read_metadata(&b, Some(&key), id(KEY));
            Ok(())
        },
    )
    .expect("random bytes");
}

#[test]
fn prop_mutated_objects_are_never_accepted() {
    let key = new_key();
    let objects: Vec<(Option<&MasterKey>, Vec<u8>, Vec<u8>)> = [None, Some(&key)]
        .into_iter()
        .flat_map(|k| {
            [Compression::None, Compression::Zstd].into_iter().map(move |c| {
                let d = data(4000);
                let o = seal_bound(&d, None, &small_codec(c), k, id(KEY), Some(b"meta")).expect("seal");
                (k, d, o)
            })
        })
        .collect();
    let mut r = runner(600, 2);
    let strategy = (
        0..objects.len(),
        any::<prop::sample::Index>(),
        1u8..=255,
        0u8..3,
        proptest::collection::vec(any::<u8>(), 1..40),
    );
    r.run(&strategy, |(which, at, mask, kind, extra)| {
        let (k, _d, obj) = &objects[which];
        let mut o = obj.clone();
        match kind {
            0 => o[at.index(obj.len())] ^= mask,
            1 => o.truncate(at.index(obj.len())),
            _ => o.extend_from_slice(&extra),
        }
        prop_assert!(
            open_object(&o, *k, Some(id(KEY))).is_err(),
            "mutation kind {} accepted",
            kind
        );
        Ok(())
    })
    .expect("mutations");
}
