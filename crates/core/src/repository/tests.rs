//! Repository tests on object_store's in-memory store: which object version each repository
//! format writes, `upgrade`, identity binding through the repository's doors (WAL, catalogs,
//! bundles), a copy between two stores keeping objects valid, one unreadable catalog blocking
//! only itself, and the bounds on the unauthenticated descriptor.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use object_store::memory::InMemory;

use crate::format::{FormatError, KdfParams, Keyring, MAGIC, MAGIC_V2};
use crate::repository::{
    layout, meta, parse_meta, BackupCatalog, ClusterIdentity, RepoMeta, Repository, RepositoryError,
};
use crate::storage::Storage;
use crate::wal::WalFileName;

const SEG: &str = "000000010000000000000003";

fn memory() -> Storage {
    Storage::from_store(Arc::new(InMemory::new()), "memory://".into(), String::new())
}

fn repo_meta(version: u32, encrypted: bool) -> (RepoMeta, Option<crate::format::MasterKey>) {
    let (keyring, key) = if encrypted {
        let p = KdfParams {
            memory_kib: 8 * 1024,
            iterations: 1,
            parallelism: 1,
        };
        let (k, m) = Keyring::create(b"a test passphrase, long", p).expect("keyring");
        (Some(k), Some(m))
    } else {
        (None, None)
    };
    let meta = RepoMeta {
        format: meta::FORMAT_NAME.into(),
        format_version: version,
        repository_id: uuid::Uuid::new_v4().to_string(),
        created_at: Utc::now(),
        created_by: "test".into(),
        cluster: ClusterIdentity {
            system_identifier: 7,
            pg_version_num: 150000,
            wal_segment_size: 1 << 20,
        },
        encryption: keyring,
        conditional_create: Some(true),
    };
    (meta, key)
}

async fn open_in(storage: Storage, meta: RepoMeta, key: Option<crate::format::MasterKey>) -> Repository {
    let body = serde_json::to_vec(&meta).expect("json");
    storage
        .put(layout::META_KEY, Bytes::from(body))
        .await
        .expect("descriptor");
    Repository::from_parts(storage, meta, key.map(Arc::new))
}

fn seg() -> WalFileName {
    WalFileName::parse(SEG).expect("name")
}

fn catalog(id: &str) -> BackupCatalog {
    serde_json::from_value(serde_json::json!({
        "catalog_version": 1, "id": id, "label": "l", "kind": "full", "pgvault_version": "0",
        "system_identifier": "7", "pg_version_num": 150000, "timeline": 1, "start_lsn": "0/3000028",
        "stop_lsn": "0/3000100", "stop_timeline": 1, "start_wal": SEG, "stop_wal": SEG,
        "start_time": "2026-01-02T03:04:05Z", "stop_time": "2026-01-02T03:04:06Z", "wal_included": false,
        "snapshot_after_stop": null, "size": 0, "stored_size": 0, "compression": "zstd", "encrypted": false,
        "owner_uid": null, "owner_gid": null, "tablespaces": [], "bundles": [], "directories": [],
        "symlinks": [], "files": [], "manifest_sha256": null
    }))
    .expect("catalog")
}

fn is_not_this_object(e: &RepositoryError) -> bool {
    matches!(
        e,
        RepositoryError::Object {
            source: FormatError::NotThisObject { .. },
            ..
        }
    )
}

#[tokio::test]
async fn v2_wal_round_trip_metadata_and_swaps() {
    for encrypted in [false, true] {
        let (m, key) = repo_meta(2, encrypted);
        let repo = open_in(memory(), m, key).await;
        let data = vec![5u8; 10_000];
        let out = repo
            .put_wal(&seg(), &data, None, Some(br#"{"restore_points":["a"]}"#))
            .await
            .expect("push");
        assert!(matches!(out, crate::repository::PushOutcome::Stored { .. }));
        assert_eq!(
            repo.put_wal(&seg(), &data, None, None).await.expect("again"),
            crate::repository::PushOutcome::AlreadyArchived
        );
        assert!(matches!(
            repo.put_wal(&seg(), &[6u8; 10], None, None).await,
            Err(RepositoryError::WalDifferentContent { .. })
        ));
        let raw = repo.storage.get(&layout::wal_key(&seg())).await.expect("raw");
        assert_eq!(&raw[..8], MAGIC_V2);
        assert_eq!(repo.get_wal(&seg()).await.expect("get").as_deref(), Some(&data[..]));
        assert_eq!(
            repo.wal_metadata(&seg()).await.expect("meta").as_deref(),
            Some(&br#"{"restore_points":["a"]}"#[..])
        );

        // The same sealed bytes under another segment, another timeline, a history name.
        for other in [
            "000000010000000000000004",
            "000000020000000000000003",
            "00000002.history",
        ] {
            let name = WalFileName::parse(other).expect("name");
            repo.storage
                .put(&layout::wal_key(&name), raw.clone())
                .await
                .expect("swap");
            let e = repo.get_wal(&name).await.expect_err("a moved object must not open");
            assert!(is_not_this_object(&e), "{other}: {e}");
            assert!(e.to_string().contains("moved or swapped"), "{e}");
        }
    }
}

#[tokio::test]
async fn catalogs_are_bound_to_their_backup_id() {
    for version in [1, 2] {
        let (m, key) = repo_meta(version, true);
        let repo = open_in(memory(), m, key).await;
        let (a, b) = ("20260102-030405F", "20260103-030405F");
        repo.put_catalog(&catalog(a)).await.expect("put");
        assert_eq!(repo.load_catalog(a).await.expect("load").id, a);
        let raw = repo.storage.get(&layout::catalog_key(a)).await.expect("raw");
        repo.storage.put(&layout::catalog_key(b), raw).await.expect("swap");
        let e = repo.load_catalog(b).await.expect_err("a catalog under another id");
        match version {
            // v1 objects carry no identity: the id inside the catalog catches it.
            1 => assert!(matches!(e, RepositoryError::CatalogIdMismatch { .. }), "{e}"),
            _ => assert!(is_not_this_object(&e), "{e}"),
        }
        // One unreadable catalog blocks only itself.
        let listing = repo.backup_listing().await.expect("listing");
        assert_eq!(
            listing.backups.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            vec![a]
        );
        assert_eq!(listing.unreadable.len(), 1);
        assert_eq!(listing.unreadable[0].0, b);
        assert_eq!(repo.list_backups().await.expect("list").len(), 1);
    }
}

#[tokio::test]
async fn v1_repository_writes_v1_until_upgrade() {
    let (m, key) = repo_meta(1, true);
    let mut repo = open_in(memory(), m, key).await;
    repo.put_wal(&seg(), b"old", None, Some(b"dropped in v1"))
        .await
        .expect("push v1");
    let raw = repo.storage.get(&layout::wal_key(&seg())).await.expect("raw");
    assert_eq!(&raw[..8], MAGIC);
    assert_eq!(repo.wal_metadata(&seg()).await.expect("v1 has none"), None);

    assert!(repo.upgrade().await.expect("upgrade"));
    assert!(!repo.upgrade().await.expect("second upgrade is a no-op"));
    let stored = parse_meta(
        "memory://",
        &repo.storage.get(layout::META_KEY).await.expect("descriptor"),
    )
    .expect("parse");
    assert_eq!(stored.format_version, 2);
    assert_eq!(stored.repository_id, repo.meta.repository_id);

    let next = WalFileName::parse("000000010000000000000004").expect("name");
    repo.put_wal(&next, b"new", None, None).await.expect("push v2");
    assert_eq!(
        &repo.storage.get(&layout::wal_key(&next)).await.expect("raw")[..8],
        MAGIC_V2
    );
    // Objects from before the upgrade stay readable.
    assert_eq!(repo.get_wal(&seg()).await.expect("old").as_deref(), Some(&b"old"[..]));
    assert_eq!(repo.get_wal(&next).await.expect("new").as_deref(), Some(&b"new"[..]));
}

#[tokio::test]
async fn copied_objects_stay_valid_in_a_copy_of_the_repository_only() {
    let (m, key) = repo_meta(2, true);
    let key_bytes = key.as_ref().map(|k| k.key_id_hex());
    let source = open_in(memory(), m.clone(), key).await;
    source.put_wal(&seg(), b"segment", None, None).await.expect("push");
    source.put_catalog(&catalog("20260102-030405F")).await.expect("catalog");

    // Byte-for-byte copy of every object into a second store, as `copy` does.
    let target_store = memory();
    for o in source.storage.list("").await.expect("list") {
        let raw = source.storage.get(&o.key).await.expect("get");
        target_store.put(&o.key, raw).await.expect("put");
    }
    let target = Repository::from_parts(target_store.clone(), m.clone(), source.key.clone());
    assert_eq!(
        target.get_wal(&seg()).await.expect("wal").as_deref(),
        Some(&b"segment"[..])
    );
    assert_eq!(
        target.load_catalog("20260102-030405F").await.expect("catalog").id,
        "20260102-030405F"
    );
    assert_eq!(target.key().map(|k| k.key_id_hex()), key_bytes);

    // The same bytes in a repository with another id (same key) do not open.
    let mut other = m;
    other.repository_id = uuid::Uuid::new_v4().to_string();
    let stranger = Repository::from_parts(target_store, other, source.key.clone());
    assert!(is_not_this_object(
        &stranger.get_wal(&seg()).await.expect_err("other repository")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_round_trip_and_are_bound_to_their_key() {
    let (m, key) = repo_meta(2, true);
    let repo = Arc::new(open_in(memory(), m, key).await);
    let id = "20260102-030405F";
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (r, d) = (repo.clone(), data.clone());
    let rt = tokio::runtime::Handle::current();
    let entries = tokio::task::spawn_blocking(move || {
        let mut w = r.bundle_writer(rt, id, 100_000);
        let mut buf = vec![0u8; 64 * 1024];
        let (pieces, _, size) = w.add_file(&mut &d[..], &mut buf).expect("add");
        assert_eq!(size, d.len() as u64);
        assert!(pieces.len() >= 3);
        w.finish().expect("finish")
    })
    .await
    .expect("join");
    assert!(entries.len() >= 3);
    let mut all = Vec::new();
    for e in &entries {
        let reader = repo.open_bundle(id, e.id).await.expect("open");
        let part = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let mut v = Vec::new();
            reader.read_to_end(&mut v).map(|_| v)
        })
        .await
        .expect("join")
        .expect("read");
        all.extend(part);
    }
    assert_eq!(all, data);
    // Bundle 0 stored as bundle 1: refused when opened.
    let raw = repo.storage.get(&layout::bundle_key(id, 0)).await.expect("raw");
    repo.storage.put(&layout::bundle_key(id, 1), raw).await.expect("swap");
    match repo.open_bundle(id, 1).await {
        Err(e) => assert!(is_not_this_object(&e), "{e}"),
        Ok(_) => panic!("a swapped bundle opened"),
    }
}

#[test]
fn descriptor_bounds_are_checked_before_use() {
    let (m, _) = repo_meta(2, true);
    let ok = serde_json::to_value(&m).expect("json");
    assert!(parse_meta("x", ok.to_string().as_bytes()).is_ok());
    let bad = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = ok.clone();
        f(&mut v);
        parse_meta("x", v.to_string().as_bytes())
    };
    for size in [0u64, 3, 1 << 19, 3 << 20, 1 << 31] {
        let e = bad(&|v| v["cluster"]["wal_segment_size"] = size.into()).expect_err("segment size");
        assert!(
            matches!(e, RepositoryError::BadMeta { .. }) && e.to_string().contains("WAL segment size"),
            "{e}"
        );
    }
    for (field, value) in [
        ("memory_kib", u64::from(u32::MAX)),
        ("iterations", 1_000_000),
        ("parallelism", 0),
    ] {
        let e = bad(&|v| v["encryption"]["params"][field] = value.into()).expect_err("kdf");
        assert!(matches!(e, RepositoryError::BadMeta { .. }), "{field}: {e}");
    }
    assert!(matches!(
        bad(&|v| v["format_version"] = 3.into()),
        Err(RepositoryError::NewerFormat { found: 3, .. })
    ));
    assert!(matches!(
        bad(&|v| v["format_version"] = 0.into()),
        Err(RepositoryError::BadMeta { .. })
    ));
}

#[test]
fn prop_descriptor_and_catalog_parsers_never_panic() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let (m, _) = repo_meta(2, true);
    let descriptor = serde_json::to_vec(&m).expect("json");
    let cat = serde_json::to_vec(&catalog("20260102-030405F")).expect("json");
    let config = Config {
        cases: 500,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let strategy = (
        any::<bool>(),
        any::<prop::sample::Index>(),
        any::<u8>(),
        0u8..3,
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    runner
        .run(&strategy, |(which, at, byte, kind, extra)| {
            let base = if which { &descriptor } else { &cat };
            let mut b = base.clone();
            match kind {
                0 => b[at.index(base.len())] = byte,
                1 => b.truncate(at.index(base.len())),
                _ => b = extra,
            }
            // Neither parser may panic; whatever parses must still satisfy the bounds.
            if let Ok(meta) = parse_meta("x", &b) {
                prop_assert!(meta.cluster.check_bounds().is_ok());
            }
            let _ = serde_json::from_slice::<BackupCatalog>(&b);
            Ok(())
        })
        .expect("parsers");
}
