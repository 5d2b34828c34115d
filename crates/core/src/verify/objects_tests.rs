//! Object checks on a real (local, temporary) repository: a backup written through the bundle
//! writer verifies clean; a flipped byte names the bundle and the file; a missing bundle, a
//! missing or altered manifest are findings; a WAL object that is not a segment is a finding.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::repository::{layout, BackupCatalog, ClusterIdentity, Repository};
use crate::verify::objects::verify_backup;
use crate::verify::report::Finding;
use crate::verify::wal::verify_wal;
use crate::verify::Tally;
use crate::wal::WalFileName;

const ID: &str = "20260102-030405F";

async fn repository(dir: &Path) -> Repository {
    let text = format!(
        "[postgres]\nhost = \"/tmp\"\nport = 5432\nuser = \"postgres\"\npgdata = \"/tmp/pg\"\n\n\
         [repository]\nurl = \"file://{}\"\n",
        dir.join("repo").display()
    );
    let config = Config::parse(&text, &dir.join("pgvault.toml")).expect("config");
    let cluster = ClusterIdentity {
        system_identifier: 7,
        pg_version_num: 150000,
        wal_segment_size: 1 << 20,
    };
    Repository::init(&config, cluster, None).await.expect("init").0
}

fn manifest(size: usize) -> Vec<u8> {
    crate::backup::manifest::with_trailer(&format!(
        "{{\"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{{ \"Path\": \"base/1/1259\", \"Size\": {size} }}\n],\n"
    ))
}

/// Stores a backup of one file of `data` (several bundles) and its manifest.
async fn store_backup(repo: &std::sync::Arc<Repository>, data: Vec<u8>) {
    let rt = tokio::runtime::Handle::current();
    let r = repo.clone();
    let size = data.len();
    let (pieces, bundles) = tokio::task::spawn_blocking(move || {
        let mut w = r.bundle_writer(rt, ID, 100_000);
        let mut buf = vec![0u8; 64 * 1024];
        let (pieces, _, _) = w.add_file(&mut &data[..], &mut buf).expect("add");
        (pieces, w.finish().expect("finish"))
    })
    .await
    .expect("join");
    assert!(bundles.len() >= 3);
    let m = manifest(size);
    repo.put_manifest(ID, &m).await.expect("manifest");
    let cat: BackupCatalog = serde_json::from_value(serde_json::json!({
        "catalog_version": 1, "id": ID, "label": "l", "kind": "full", "pgvault_version": "0",
        "system_identifier": "7", "pg_version_num": 150000, "timeline": 1, "start_lsn": "0/3000028",
        "stop_lsn": "0/3000100", "stop_timeline": 1, "start_wal": "000000010000000000000003",
        "stop_wal": "000000010000000000000003", "start_time": "2026-01-02T03:04:05Z",
        "stop_time": "2026-01-02T03:04:06Z", "wal_included": false, "snapshot_after_stop": null,
        "size": size, "stored_size": 0, "compression": "zstd", "encrypted": false, "owner_uid": null,
        "owner_gid": null, "tablespaces": [], "bundles": bundles, "directories": [], "symlinks": [],
        "files": [{"path": "base/1/1259", "size": size, "mode": 384, "mtime": 0, "pieces": pieces}],
        "manifest_sha256": hex::encode(Sha256::digest(&m))
    }))
    .expect("catalog");
    repo.put_catalog(&cat).await.expect("catalog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_and_manifest_are_read_back_and_damage_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = std::sync::Arc::new(repository(dir.path()).await);
    let data: Vec<u8> = (0..350_000u32).map(|i| (i * 7 % 251) as u8).collect();
    store_backup(&repo, data).await;
    let tally = Tally::default();
    assert_eq!(verify_backup(&repo, ID, 2, &tally).await.expect("verify"), vec![]);
    let counts = tally.counts();
    assert!(counts.bundles >= 3 && counts.manifests == 1, "{counts:?}");
    assert!(counts.plain_bytes >= 350_000, "{counts:?}");

    // One flipped byte in bundle 1: that bundle, that file.
    let root = dir.path().join("repo");
    let b1 = root.join(layout::bundle_key(ID, 1));
    let original = std::fs::read(&b1).expect("bundle");
    let mut bytes = original.clone();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x10;
    std::fs::write(&b1, &bytes).expect("write");
    let found = verify_backup(&repo, ID, 2, &Tally::default()).await.expect("verify");
    match &found[..] {
        [Finding::BundleDamaged {
            backup, bundle, file, ..
        }] => {
            assert_eq!(
                (backup.as_str(), *bundle, file.as_deref()),
                (ID, 1, Some("base/1/1259"))
            );
        }
        other => panic!("{other:?}"),
    }

    // Bundle 1 gone, the manifest altered.
    std::fs::remove_file(&b1).expect("remove");
    repo.put_manifest(ID, &manifest(1)).await.expect("manifest");
    let found = verify_backup(&repo, ID, 2, &Tally::default()).await.expect("verify");
    assert!(found.contains(&Finding::BundleMissing {
        backup: ID.into(),
        bundle: 1
    }));
    assert!(
        found
            .iter()
            .any(|f| matches!(f, Finding::ManifestDamaged { detail, .. } if detail.contains("SHA-256"))),
        "{found:?}"
    );
    std::fs::write(&b1, &original).expect("restore");
    std::fs::remove_file(root.join(layout::manifest_key(ID))).expect("remove manifest");
    let found = verify_backup(&repo, ID, 2, &Tally::default()).await.expect("verify");
    assert_eq!(found, vec![Finding::ManifestMissing { backup: ID.into() }]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_objects_are_opened_and_checked_as_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = repository(dir.path()).await;
    let seg = WalFileName::parse("000000010000000000000003").expect("name");
    repo.put_wal(&seg, &[0u8; 1 << 20], None, None).await.expect("push");
    let history = WalFileName::parse("00000002.history").expect("name");
    repo.put_wal(&history, b"1\t0/3000100\tno recovery target specified\n", None, None)
        .await
        .expect("push");
    let tally = Tally::default();
    let found = verify_wal(&repo, vec![(seg, 1), (history, 1)], 2, &tally)
        .await
        .expect("verify");
    match &found[..] {
        [Finding::WalDamaged { file, .. }] => assert_eq!(file, "000000010000000000000003", "zeros are not WAL"),
        other => panic!("{other:?}"),
    }
    assert_eq!(tally.counts().wal_files, 2);
    // Listed, then removed by a concurrent expire: skipped, not reported.
    repo.delete_wal(&seg).await.expect("delete");
    assert_eq!(
        verify_wal(&repo, vec![(seg, 1)], 1, &Tally::default())
            .await
            .expect("verify"),
        vec![]
    );
}
