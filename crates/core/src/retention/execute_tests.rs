//! Execution on an in-memory repository: a dry run changes nothing; a run deletes exactly the
//! plan (backups catalog first, WAL by name, old orphans), records the horizon and leaves pins;
//! a second run has nothing to do; a lock held by another run refuses the run.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};

use crate::lsn::Lsn;
use crate::repository::dirs::test_repository;
use crate::repository::state::Pin;
use crate::repository::{layout, meta, BackupCatalog, ClusterIdentity, RepoMeta, Repository};
use crate::retention::execute::{expire, RetentionError};
use crate::retention::policy::Policy;
use crate::retention::{LOCK_LEASE, REPOSITORY_LOCK};
use crate::storage::Storage;
use crate::wal::WalFileName;

const SS: u64 = 16 << 20;

fn t(h: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("date") + chrono::Duration::hours(h)
}

fn id(i: u32) -> String {
    format!("20260101-{:02}0000F", i)
}

fn catalog(i: u32) -> BackupCatalog {
    let start = u64::from(i) * 10 + 1;
    let seg = |n: u64| WalFileName::from_segment_number(1, n, SS).to_string();
    serde_json::from_value(serde_json::json!({
        "catalog_version": 1, "id": id(i), "label": "l", "kind": "full", "pgvault_version": "0",
        "system_identifier": "7", "pg_version_num": 150000, "timeline": 1,
        "start_lsn": Lsn(start * SS + 0x28).to_string(), "stop_lsn": Lsn((start + 1) * SS + 0x100).to_string(),
        "stop_timeline": 1, "start_wal": seg(start), "stop_wal": seg(start + 1),
        "start_time": t(i64::from(i)).to_rfc3339(), "stop_time": t(i64::from(i)).to_rfc3339(), "wal_included": false,
        "snapshot_after_stop": null, "size": 0, "stored_size": 5, "compression": "zstd", "encrypted": false,
        "owner_uid": null, "owner_gid": null, "tablespaces": [], "bundles": [], "directories": [],
        "symlinks": [], "files": [], "manifest_sha256": null
    }))
    .expect("catalog")
}

async fn repository() -> Repository {
    let m = RepoMeta {
        format: meta::FORMAT_NAME.into(),
        format_version: 2,
        repository_id: "test".into(),
        created_at: Utc::now(),
        created_by: "test".into(),
        cluster: ClusterIdentity {
            system_identifier: 7,
            pg_version_num: 150000,
            wal_segment_size: SS,
        },
        encryption: None,
        conditional_create: Some(true),
    };
    let repo = test_repository(Storage::memory(), m).await;
    for i in 0..4 {
        repo.put_catalog(&catalog(i)).await.expect("catalog");
        let bundle = layout::bundle_key(&id(i), 0);
        repo.storage()
            .put(&bundle, Bytes::from_static(b"x"))
            .await
            .expect("bundle");
    }
    for n in 0..=45 {
        let name = WalFileName::from_segment_number(1, n, SS);
        repo.storage()
            .put(&layout::wal_key(&name), Bytes::from_static(b"w"))
            .await
            .expect("wal");
    }
    // An orphan: a backup directory without a catalog.
    let orphan = layout::bundle_key("20251231-000000F", 0);
    repo.storage()
        .put(&orphan, Bytes::from_static(b"o"))
        .await
        .expect("orphan");
    repo.put_pin(&Pin {
        backup: id(0),
        created_at: t(0),
        until: None,
        note: Some("audit".into()),
    })
    .await
    .expect("pin");
    repo
}

async fn keys(repo: &Repository) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in ["backups", "wal", "pins", "retention", "locks"] {
        out.extend(repo.storage().list(p).await.expect("list").into_iter().map(|o| o.key));
    }
    out
}

fn policy(orphan_min_age: Duration) -> Policy {
    Policy {
        keep_full: Some(2),
        orphan_min_age,
        ..Policy::default()
    }
}

#[tokio::test]
async fn dry_run_then_run_then_nothing_left() {
    let repo = repository().await;
    let before = keys(&repo).await;
    let now = Utc::now();
    let dry = expire(&repo, &policy(Duration::ZERO), now, true)
        .await
        .expect("dry run");
    assert!(!dry.applied);
    assert_eq!(keys(&repo).await, before, "a dry run changes nothing");
    let deleted: Vec<&str> = dry.plan.delete_backups.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(
        deleted,
        vec![id(1).as_str()],
        "b0 is pinned, b2 and b3 are the newest two"
    );

    let done = expire(&repo, &policy(Duration::ZERO), now, false).await.expect("run");
    assert!(done.applied);
    let after = keys(&repo).await;
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    let mut expect: BTreeSet<String> = done.plan.delete_wal.iter().map(layout::wal_key).collect();
    expect.insert(layout::catalog_key(&id(1)));
    expect.insert(layout::bundle_key(&id(1), 0));
    expect.insert(layout::bundle_key("20251231-000000F", 0));
    assert_eq!(gone, expect);
    // b0's own WAL (1, 2) stays, WAL from b2's start (21) on stays, 0 and 3..=20 go.
    let wal_gone: Vec<u64> = done.plan.delete_wal.iter().map(|n| n.segment_number(SS)).collect();
    let mut want: Vec<u64> = vec![0];
    want.extend(3..21);
    assert_eq!(wal_gone, want);
    let h = repo.wal_horizon().await.expect("horizon").expect("written");
    assert_eq!(h.backup, id(2));
    assert!(after.contains(&layout::pin_key(&id(0))));
    assert!(!after.iter().any(|k| k.starts_with("locks/")), "the lock is released");

    let again = expire(&repo, &policy(Duration::ZERO), now, false).await.expect("again");
    assert!(again.plan.is_noop(), "{:?}", again.plan);
}

#[tokio::test]
async fn young_orphans_stay_and_a_held_lock_refuses() {
    let repo = repository().await;
    let out = expire(&repo, &policy(Duration::from_secs(3600)), Utc::now(), false)
        .await
        .expect("run");
    assert!(out.plan.orphans.iter().all(|o| !o.remove));
    assert!(repo.catalog_exists(&id(3)).await.expect("head"));
    assert!(!repo.backup_objects("20251231-000000F").await.expect("list").is_empty());
    let held = repo
        .lock(REPOSITORY_LOCK, LOCK_LEASE, "pgvault backup")
        .await
        .expect("lock");
    match expire(&repo, &policy(Duration::ZERO), Utc::now(), false).await {
        Err(RetentionError::Lock(_)) => {}
        other => panic!("expected the lock to refuse: {other:?}"),
    }
    held.release().await.expect("release");
}

/// `expire --dry-run` on a repository of 1,000 backups: planned from the backup index and the
/// listings, it reads a handful of objects (not one catalog or segment per backup) and writes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_over_1000_backups_reads_a_handful_of_objects() {
    use crate::repository::synthetic::synthetic_repository;
    use std::time::Instant;

    let s = synthetic_repository(1000).await;
    s.repo.backup_summaries().await.expect("index current");
    s.store.reset();
    let policy = Policy {
        keep_full: Some(30),
        ..Policy::default()
    };
    let t = Instant::now();
    let out = expire(&s.repo, &policy, Utc::now(), true).await.expect("dry run");
    let took = t.elapsed();
    let c = s.store.counts();
    eprintln!("expire --dry-run over 1000 backups: {took:?}, {c:?}");
    assert!(!out.applied);
    assert_eq!(out.plan.delete_backups.len(), 970, "keeps the newest 30");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // A fixed number of listings (backups, WAL, pins, gap markers, ...), not one per backup.
    assert!(c.lists <= 5, "{c:?}");
    assert!(
        c.gets <= 6,
        "a handful of objects, not one per backup or segment: {c:?}"
    );
    assert_eq!((c.puts, c.deletes), (0, 0), "a dry run writes nothing: {c:?}");
}
