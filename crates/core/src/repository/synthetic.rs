//! Test support: a repository in memory, sealed with a real key, holding many synthetic backups
//! (catalogs with a few files each, plausible LSNs and times) and the WAL between them with the
//! times push records, behind a [`Counting`] store. Tests of listing, planning and retention
//! build one with [`synthetic_repository`] and assert how many requests a command makes.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use object_store::memory::InMemory;
use object_store::ObjectStore;

use crate::format::{KdfParams, Keyring};
use crate::lsn::Lsn;
use crate::repository::{layout, meta, BackupCatalog, ClusterIdentity, RepoMeta, Repository};
use crate::storage::counting::Counting;
use crate::storage::Storage;
use crate::wal::{WalFileName, WalSummary};

/// 16 MiB, PostgreSQL's default.
pub(crate) const SEGMENT_SIZE: u64 = 16 << 20;
/// Segments between the starts of two backups.
pub(crate) const SEGMENTS_PER_BACKUP: u64 = 3;
/// The first backup starts in this segment.
pub(crate) const FIRST_SEGMENT: u64 = 4;

/// What to build.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SyntheticOptions {
    pub backups: usize,
    /// Build the backup index as the last step (as the first listing by this pgvault would).
    pub build_index: bool,
    /// Leave two segments out after the middle backup, so one window ends at a gap.
    pub gap: bool,
}

/// The repository and what a test needs to know about it.
pub(crate) struct Synthetic {
    pub repo: Repository,
    /// Counts every request the repository makes from now on (reset after building).
    pub store: Arc<Counting>,
    /// The backup ids, oldest first.
    pub ids: Vec<String>,
    /// Every archived segment, in order.
    pub segments: Vec<WalFileName>,
    /// The segments left out for the gap (empty without one).
    pub missing: Vec<WalFileName>,
}

/// Segment `n`'s wall-clock time: segments are 20 minutes apart, backups an hour apart.
pub(crate) fn segment_time(n: u64) -> DateTime<Utc> {
    let base = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single().unwrap_or_default();
    base + Duration::minutes(20 * n as i64)
}

/// The passphrase of synthetic repositories (a test secret).
pub(crate) const PASSPHRASE: &str = "a synthetic test passphrase";

/// An empty repository of format `version` in a counting memory store, encrypted with a real key.
pub(crate) async fn empty_repository(version: u32) -> (Repository, Arc<Counting>) {
    let params = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };
    empty_repository_over(version, Arc::new(InMemory::new()), params).await
}

/// An empty repository of format `version` in `inner` (behind a counting store), encrypted with
/// a key wrapped under [`PASSPHRASE`] with `params`.
pub(crate) async fn empty_repository_over(
    version: u32,
    inner: Arc<dyn ObjectStore>,
    params: KdfParams,
) -> (Repository, Arc<Counting>) {
    let (keyring, key) = Keyring::create(PASSPHRASE.as_bytes(), params).expect("keyring");
    let meta = RepoMeta {
        format: meta::FORMAT_NAME.into(),
        format_version: version,
        repository_id: uuid::Uuid::new_v4().to_string(),
        created_at: Utc::now(),
        created_by: "synthetic".into(),
        cluster: ClusterIdentity {
            system_identifier: 7_000_000_000_000_000_007,
            pg_version_num: 150_004,
            wal_segment_size: SEGMENT_SIZE,
        },
        encryption: Some(keyring),
        conditional_create: Some(true),
    };
    let store = Arc::new(Counting::over(inner));
    let storage = Storage::from_store(store.clone(), "counting://".into(), String::new());
    let body = serde_json::to_vec(&meta).expect("descriptor");
    storage
        .put(layout::META_KEY, Bytes::from(body))
        .await
        .expect("descriptor");
    let repo = Repository::from_parts(storage, meta, Some(Arc::new(key)));
    (repo, store)
}

/// The catalog of synthetic backup `i` (starting in segment `FIRST_SEGMENT + 3 i`).
pub(crate) fn synthetic_catalog(i: usize) -> BackupCatalog {
    let seg = FIRST_SEGMENT + SEGMENTS_PER_BACKUP * i as u64;
    let start = segment_time(seg) + Duration::seconds(5);
    let stop = start + Duration::minutes(4);
    let id = format!("{}F", start.format("%Y%m%d-%H%M%S"));
    let wal = WalFileName::from_segment_number(1, seg, SEGMENT_SIZE).to_string();
    let files: Vec<serde_json::Value> = (0..3u64)
        .map(|f| {
            serde_json::json!({
                "path": format!("base/5/{}", 16384 + f), "size": 8192, "mode": 0o600, "mtime": 1_700_000_000,
                "pieces": [{"bundle": 0, "bundle_offset": f * 8192, "file_offset": 0, "len": 8192,
                            "sha256": format!("{:064x}", i as u64 * 3 + f)}]
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "catalog_version": 1, "id": id, "label": format!("synthetic {i}"), "kind": "full", "pgvault_version": "0",
        "system_identifier": "7000000000000000007", "pg_version_num": 150004, "timeline": 1,
        "start_lsn": Lsn(seg * SEGMENT_SIZE + 0x28).to_string(),
        "stop_lsn": Lsn(seg * SEGMENT_SIZE + 0x10_0000).to_string(), "stop_timeline": 1,
        "start_wal": wal, "stop_wal": wal, "start_time": start.to_rfc3339(), "stop_time": stop.to_rfc3339(),
        "wal_included": false, "snapshot_after_stop": null, "size": 3 * 8192, "stored_size": 9000,
        "compression": "zstd", "encrypted": true, "owner_uid": null, "owner_gid": null, "tablespaces": [],
        "bundles": [{"id": 0, "size": 3 * 8192, "stored_size": 9000}], "directories": [{"path": "base/5", "mode": 0o700}],
        "symlinks": [], "files": files, "manifest_sha256": null
    }))
    .expect("synthetic catalog")
}

/// The summary push records with segment `n`: commits from its first to its last minute.
fn summary_of(n: u64) -> WalSummary {
    WalSummary {
        first_commit: Some(segment_time(n) + Duration::seconds(1)),
        last_commit: Some(segment_time(n) + Duration::minutes(19)),
        records: 100,
        complete: true,
        last_record_end: Some(Lsn((n + 1) * SEGMENT_SIZE - 8)),
        ..WalSummary::default()
    }
}

/// A repository with `n` backups an hour apart, WAL from the first backup to two segments past
/// the last one, a gap of two segments after the middle backup, and the backup index built.
pub(crate) async fn synthetic_repository(n: usize) -> Synthetic {
    synthetic_with(SyntheticOptions {
        backups: n,
        build_index: true,
        gap: true,
    })
    .await
}

/// A repository as `opts` asks (see [`synthetic_repository`]).
pub(crate) async fn synthetic_with(opts: SyntheticOptions) -> Synthetic {
    let (repo, store) = empty_repository(meta::FORMAT_VERSION).await;
    fill(repo, store, opts).await
}

/// Fills the empty repository `repo` as `opts` asks.
pub(crate) async fn fill(repo: Repository, store: Arc<Counting>, opts: SyntheticOptions) -> Synthetic {
    let mut ids = Vec::with_capacity(opts.backups);
    for i in 0..opts.backups {
        let cat = synthetic_catalog(i);
        let body = serde_json::to_vec(&cat).expect("catalog json");
        // Stored as an older pgvault did (no index update), so building stays linear.
        repo.put_sealed(&layout::catalog_key(&cat.id), &body)
            .await
            .expect("catalog");
        ids.push(cat.id);
    }
    let last = FIRST_SEGMENT + SEGMENTS_PER_BACKUP * opts.backups as u64 + 1;
    let gap_at = FIRST_SEGMENT + SEGMENTS_PER_BACKUP * (opts.backups / 2) as u64 + 1;
    let (mut segments, mut missing) = (Vec::new(), Vec::new());
    for n in FIRST_SEGMENT..=last {
        let name = WalFileName::from_segment_number(1, n, SEGMENT_SIZE);
        if opts.gap && opts.backups > 2 && (gap_at..gap_at + 2).contains(&n) {
            missing.push(name);
            continue;
        }
        let meta = serde_json::to_vec(&summary_of(n)).expect("summary json");
        let data = n.to_be_bytes();
        repo.put_wal(&name, &data, None, Some(&meta)).await.expect("wal");
        segments.push(name);
    }
    if opts.build_index {
        let listed = repo.backup_summaries().await.expect("index");
        assert_eq!(listed.backups.len(), opts.backups, "every synthetic backup is listed");
    }
    store.reset();
    Synthetic {
        repo,
        store,
        ids,
        segments,
        missing,
    }
}

/// Writes a synthetic repository of `PGVAULT_SYNTHETIC_BACKUPS` (default 1000) backups into the
/// empty directory `PGVAULT_SYNTHETIC_DIR`, to time the real `pgvault list` on it (passphrase:
/// [`PASSPHRASE`]). Run by hand: `PGVAULT_SYNTHETIC_DIR=/tmp/x cargo test -p pgvault-core --lib
/// write_synthetic_repository_to_a_directory -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes a repository for timing by hand"]
async fn write_synthetic_repository_to_a_directory() {
    let Ok(dir) = std::env::var("PGVAULT_SYNTHETIC_DIR") else {
        panic!("set PGVAULT_SYNTHETIC_DIR to an empty directory");
    };
    let n = std::env::var("PGVAULT_SYNTHETIC_BACKUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let local = crate::storage::local::DurableLocal::new(std::path::Path::new(&dir), true).expect("directory");
    let (repo, store) = empty_repository_over(meta::FORMAT_VERSION, Arc::new(local), KdfParams::default()).await;
    let s = fill(
        repo,
        store,
        SyntheticOptions {
            backups: n,
            build_index: true,
            gap: true,
        },
    )
    .await;
    eprintln!("{} backups, {} segments in {dir}", s.ids.len(), s.segments.len());
}
