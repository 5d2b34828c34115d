//! The backup index: reconciliation with the listing (pure), and on a counting memory store that
//! listing reads one object, that every way the index can go stale or bad is repaired from the
//! catalogs, and that writers keep it current.

use bytes::Bytes;

use super::*;
use crate::lsn::Lsn;
use crate::repository::synthetic::{empty_repository, synthetic_catalog, synthetic_with, SyntheticOptions};

fn summary(i: usize) -> BackupSummary {
    BackupSummary::from(&synthetic_catalog(i))
}

fn ids(v: &[BackupSummary]) -> Vec<String> {
    v.iter().map(|s| s.id.clone()).collect()
}

#[test]
fn reconcile_keeps_listed_entries_loads_the_rest_and_drops_the_gone() {
    let all: Vec<BackupSummary> = (0..4).map(summary).collect();
    let listed = ids(&all[1..]);
    // The index knows 0 (gone), 1 and 2; 3 is new.
    let r = reconcile(&listed, all[..3].to_vec(), &IndexChange::None);
    assert_eq!(r.known.keys().cloned().collect::<Vec<_>>(), ids(&all[1..3]));
    assert_eq!(r.to_load, vec![all[3].id.clone()]);
    assert!(r.changed, "dropping an entry changes the index");

    let r = reconcile(&listed, all[1..].to_vec(), &IndexChange::None);
    assert!(r.to_load.is_empty() && !r.changed, "{r:?}");

    // Duplicates in the stored index are dropped.
    let mut dup = all[1..].to_vec();
    dup.push(all[1].clone());
    let r = reconcile(&listed, dup, &IndexChange::None);
    assert!(r.changed && r.known.len() == 3);
}

#[test]
fn reconcile_applies_a_writers_change() {
    let all: Vec<BackupSummary> = (0..3).map(summary).collect();
    let listed = ids(&all);
    let r = reconcile(
        &listed,
        all[..2].to_vec(),
        &IndexChange::Stored(Box::new(all[2].clone())),
    );
    assert!(r.changed && r.to_load.is_empty() && r.known.len() == 3, "{r:?}");
    // A stored summary that differs from the entry replaces it.
    let mut other = all[1].clone();
    other.label = "relabelled".into();
    let r = reconcile(&listed, all.clone(), &IndexChange::Stored(Box::new(other.clone())));
    assert!(r.changed);
    assert_eq!(r.known.get(&other.id), Some(&other));
    // A backup being deleted is left out although its directory is still listed.
    let r = reconcile(&listed, all.clone(), &IndexChange::Removed(all[0].id.clone()));
    assert!(
        r.changed && !r.known.contains_key(&all[0].id) && r.to_load.is_empty(),
        "{r:?}"
    );
    let r = reconcile(&listed, all[1..].to_vec(), &IndexChange::Removed(all[0].id.clone()));
    assert!(
        !r.changed && r.to_load.is_empty(),
        "nothing to load for a backup being deleted: {r:?}"
    );
}

fn opts(backups: usize, build_index: bool) -> SyntheticOptions {
    SyntheticOptions {
        backups,
        build_index,
        gap: false,
    }
}

async fn stored_index(repo: &Repository) -> Vec<String> {
    match repo.read_index().await.expect("read") {
        IndexRead::Found(b) => ids(&b),
        other => panic!("no readable index: {other:?}"),
    }
}

#[tokio::test]
async fn listing_reads_one_object_once_the_index_exists() {
    let s = synthetic_with(opts(30, false)).await;
    // No index yet (catalogs written by an older pgvault): every catalog is read, the index written.
    let first = s.repo.backup_summaries().await.expect("list");
    assert_eq!(ids(&first.backups), s.ids);
    let c = s.store.counts();
    assert!(c.gets >= 30 && c.puts == 1, "{c:?}");
    assert_eq!(stored_index(&s.repo).await, s.ids);
    s.store.reset();
    let second = s.repo.backup_summaries().await.expect("list");
    assert_eq!(
        second.backups, first.backups,
        "the index answers what the catalogs said"
    );
    let c = s.store.counts();
    assert_eq!(
        (c.gets, c.lists, c.puts, c.heads),
        (1, 1, 0, 0),
        "one listing, one object: {c:?}"
    );
}

#[tokio::test]
async fn a_backup_missing_from_the_index_is_loaded_and_the_index_repaired() {
    let s = synthetic_with(opts(5, true)).await;
    // A backup finished by an older binary (or whose index update was lost).
    let cat = synthetic_catalog(5);
    let body = serde_json::to_vec(&cat).expect("json");
    s.repo
        .put_sealed(&layout::catalog_key(&cat.id), &body)
        .await
        .expect("put");
    // An unfinished backup: a directory without a catalog is not a backup.
    s.repo
        .storage()
        .put(&layout::bundle_key("20990101-000000F", 0), Bytes::from_static(b"x"))
        .await
        .expect("put");
    s.store.reset();
    let got = s.repo.backup_summaries().await.expect("list");
    assert_eq!(got.backups.len(), 6);
    assert_eq!(got.backups[5].id, cat.id);
    assert_eq!(s.store.counts().puts, 1, "the repaired index is written back");
    assert_eq!(stored_index(&s.repo).await.len(), 6);
}

#[tokio::test]
async fn an_entry_whose_backup_is_gone_is_dropped() {
    let s = synthetic_with(opts(4, true)).await;
    // Removed behind the index's back (an older binary, or a crash after the objects went).
    for o in s
        .repo
        .storage()
        .list(&layout::backup_dir(&s.ids[1]))
        .await
        .expect("list")
    {
        s.repo.storage().delete(&o.key).await.expect("delete");
    }
    let got = s.repo.backup_summaries().await.expect("list");
    assert_eq!(
        ids(&got.backups),
        vec![s.ids[0].clone(), s.ids[2].clone(), s.ids[3].clone()]
    );
    assert_eq!(stored_index(&s.repo).await.len(), 3);
}

#[tokio::test]
async fn an_unreadable_index_is_rebuilt_never_fatal() {
    let s = synthetic_with(opts(4, true)).await;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"not sealed at all".to_vec()),
        // A sealed object of another key moved here: bound to its own name, refused.
        (
            "moved",
            s.repo
                .storage()
                .get(&layout::catalog_key(&s.ids[0]))
                .await
                .expect("get")
                .to_vec(),
        ),
        (
            "not an index",
            s.repo.seal(layout::BACKUP_INDEX_KEY, b"{\"hello\": 1}").expect("seal"),
        ),
    ];
    for (what, raw) in bad {
        s.repo
            .storage()
            .put(layout::BACKUP_INDEX_KEY, Bytes::from(raw))
            .await
            .expect("put");
        assert!(
            matches!(s.repo.read_index().await, Ok(IndexRead::Unreadable(_))),
            "{what}"
        );
        let got = s
            .repo
            .backup_summaries()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(ids(&got.backups), s.ids, "{what}");
        assert_eq!(stored_index(&s.repo).await, s.ids, "{what}: rebuilt");
    }
}

#[tokio::test]
async fn a_newer_index_is_neither_trusted_nor_overwritten() {
    let s = synthetic_with(opts(3, false)).await;
    let newer = serde_json::json!({"index_version": 99, "backups": []});
    let body = serde_json::to_vec(&newer).expect("json");
    s.repo.put_sealed(layout::BACKUP_INDEX_KEY, &body).await.expect("put");
    s.store.reset();
    let got = s.repo.backup_summaries().await.expect("list");
    assert_eq!(ids(&got.backups), s.ids);
    assert_eq!(s.store.counts().puts, 0);
    assert!(matches!(s.repo.read_index().await, Ok(IndexRead::Newer(99))));
}

#[tokio::test]
async fn put_catalog_and_delete_backup_keep_the_index_current() {
    let s = synthetic_with(opts(3, true)).await;
    let cat = synthetic_catalog(3);
    s.repo.put_catalog(&cat).await.expect("put");
    assert_eq!(stored_index(&s.repo).await.len(), 4, "the new backup is in the index");
    s.repo.delete_backup(&s.ids[0]).await.expect("delete");
    let left = stored_index(&s.repo).await;
    assert_eq!(left, vec![s.ids[1].clone(), s.ids[2].clone(), cat.id.clone()]);
    s.store.reset();
    let got = s.repo.backup_summaries().await.expect("list");
    assert_eq!(ids(&got.backups), left);
    assert_eq!(
        s.store.counts().gets,
        1,
        "no catalog read after the writers: {:?}",
        s.store.counts()
    );
}

#[tokio::test]
async fn a_lost_update_between_two_writers_is_repaired_by_the_next_listing() {
    let s = synthetic_with(opts(2, true)).await;
    let before = match s.repo.read_index().await.expect("read") {
        IndexRead::Found(b) => b,
        other => panic!("{other:?}"),
    };
    let (a, b) = (synthetic_catalog(2), synthetic_catalog(3));
    s.repo.put_catalog(&a).await.expect("a");
    s.repo.put_catalog(&b).await.expect("b");
    // Writer A read the index before B wrote and wrote after: B's entry is lost.
    let mut lost = before;
    lost.push(BackupSummary::from(&a));
    s.repo.write_index(lost).await.expect("write");
    let got = s.repo.backup_summaries().await.expect("list");
    assert_eq!(got.backups.len(), 4);
    assert_eq!(stored_index(&s.repo).await.len(), 4);
}

#[tokio::test]
async fn restore_never_trusts_the_index_alone() {
    let s = synthetic_with(opts(2, true)).await;
    let mut wrong = summary(1);
    wrong.stop_lsn = Lsn(wrong.stop_lsn.0 + 1);
    s.repo
        .write_index(vec![summary(0), wrong.clone()])
        .await
        .expect("write");
    let listed = s.repo.backup_summaries().await.expect("list");
    assert_eq!(listed.backups[1], wrong, "listing trusts the index");
    let err = s.repo.load_catalog_matching(&wrong).await.expect_err("mismatch");
    assert!(err.to_string().contains("disagreed"), "{err}");
    let fixed = s.repo.backup_summaries().await.expect("list");
    assert_eq!(fixed.backups[1], summary(1), "the index was repaired");
    assert!(s.repo.load_catalog_matching(&fixed.backups[1]).await.is_ok());
}

#[tokio::test]
async fn a_format1_repository_keeps_no_index() {
    let (repo, _store) = empty_repository(1).await;
    let cat = synthetic_catalog(0);
    repo.put_catalog(&cat).await.expect("put");
    assert!(!repo.has_backup_index());
    assert_eq!(ids(&repo.backup_summaries().await.expect("list").backups), vec![cat.id]);
    assert!(matches!(repo.read_index().await, Ok(IndexRead::Missing)));
}

/// One step of the property test below: what writers (this pgvault, an older one, a crashed one,
/// a concurrent one) can do to a repository's backups and its index.
#[derive(Clone, Debug)]
enum Op {
    /// A backup by this pgvault: a bundle, then the catalog (which updates the index).
    Put(usize),
    /// A backup by an older pgvault, or one whose index update was lost to a crash.
    PutRaw(usize),
    /// An unfinished backup: a bundle, no catalog.
    Unfinished(usize),
    /// `delete_backup`.
    Delete(usize),
    /// A delete by an older pgvault (catalog, then objects; no index update).
    DeleteRaw(usize),
    /// `delete_backup` interrupted after the catalog went, before the rest.
    CrashMidDelete(usize),
    /// A concurrent writer reads the index now ...
    Snapshot,
    /// ... and writes what it read later (a lost update).
    StaleWrite,
    /// The index object is damaged.
    Corrupt,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let id = 0usize..5;
    prop_oneof![
        id.clone().prop_map(Op::Put),
        id.clone().prop_map(Op::PutRaw),
        id.clone().prop_map(Op::Unfinished),
        id.clone().prop_map(Op::Delete),
        id.clone().prop_map(Op::DeleteRaw),
        id.prop_map(Op::CrashMidDelete),
        Just(Op::Snapshot),
        Just(Op::StaleWrite),
        Just(Op::Corrupt),
    ]
}

async fn apply(repo: &Repository, op: &Op, snapshot: &mut Option<Bytes>) {
    let st = repo.storage();
    let id = |i: &usize| synthetic_catalog(*i).id;
    match op {
        Op::Put(i) | Op::PutRaw(i) => {
            let cat = synthetic_catalog(*i);
            st.put(&layout::bundle_key(&cat.id, 0), Bytes::from_static(b"b"))
                .await
                .expect("bundle");
            if matches!(op, Op::Put(_)) {
                repo.put_catalog(&cat).await.expect("catalog");
            } else {
                let body = serde_json::to_vec(&cat).expect("json");
                repo.put_sealed(&layout::catalog_key(&cat.id), &body)
                    .await
                    .expect("catalog");
            }
        }
        Op::Unfinished(i) => {
            if !repo.catalog_exists(&id(i)).await.expect("head") {
                st.put(&layout::bundle_key(&id(i), 0), Bytes::from_static(b"b"))
                    .await
                    .expect("bundle");
            }
        }
        Op::Delete(i) => repo.delete_backup(&id(i)).await.expect("delete"),
        Op::DeleteRaw(i) => {
            st.delete(&layout::catalog_key(&id(i))).await.expect("delete");
            for o in st.list(&layout::backup_dir(&id(i))).await.expect("list") {
                st.delete(&o.key).await.expect("delete");
            }
        }
        Op::CrashMidDelete(i) => {
            repo.refresh_index(IndexChange::Removed(id(i))).await.expect("index");
            st.delete(&layout::catalog_key(&id(i))).await.expect("delete");
        }
        Op::Snapshot => *snapshot = st.get_opt(layout::BACKUP_INDEX_KEY).await.expect("get"),
        Op::StaleWrite => {
            if let Some(raw) = snapshot.clone() {
                st.put(layout::BACKUP_INDEX_KEY, raw).await.expect("put");
            }
        }
        Op::Corrupt => st
            .put(layout::BACKUP_INDEX_KEY, Bytes::from_static(b"torn"))
            .await
            .expect("put"),
    }
}

/// Whatever writers did, in any order, crashes and lost updates included: every backup whose
/// catalog exists is listed with its catalog's summary (a backup is never missing from a
/// listing, so retention can never act as if it were gone); a listed backup without a catalog
/// can only be one whose delete was interrupted with its directory still there, and re-running
/// the delete clears it.
#[test]
fn prop_listing_agrees_with_the_catalogs_after_any_writes() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]));
    runner
        .run(&proptest::collection::vec(op(), 1..24), |ops| {
            rt.block_on(async {
                let (repo, _) = empty_repository(2).await;
                let mut snapshot = None;
                for op in &ops {
                    apply(&repo, op, &mut snapshot).await;
                }
                let listed = repo.backup_summaries().await.expect("list");
                prop_assert!(listed.unreadable.is_empty());
                let mut truth = Vec::new();
                for i in 0..5 {
                    if repo.catalog_exists(&synthetic_catalog(i).id).await.expect("head") {
                        truth.push(summary(i));
                    }
                }
                for t in &truth {
                    prop_assert!(
                        listed.backups.contains(t),
                        "{} is missing from {:?}",
                        t.id,
                        ids(&listed.backups)
                    );
                }
                for extra in listed.backups.iter().filter(|b| !truth.contains(b)) {
                    let dir = repo.storage().list(&layout::backup_dir(&extra.id)).await.expect("list");
                    prop_assert!(!dir.is_empty(), "{} is listed but gone", extra.id);
                    repo.delete_backup(&extra.id).await.expect("delete again");
                }
                let again = repo.backup_summaries().await.expect("list");
                prop_assert_eq!(again.backups, truth);
                Ok(())
            })
        })
        .expect("the listing agrees with the catalogs");
}
