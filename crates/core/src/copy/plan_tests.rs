//! Tests of the copy plan: what the target lacks, and which WAL a backup needs.

use chrono::Utc;

use super::*;
use crate::copy::CopySummary;
use crate::repository::gaps::WalGapMarker;
use crate::timeline::{parse_history, TimelineTree};

const SEG: u64 = 16 * 1024 * 1024;

fn cluster() -> ClusterIdentity {
    ClusterIdentity {
        system_identifier: 1,
        pg_version_num: 150_004,
        wal_segment_size: SEG,
    }
}

fn wal(name: &str, size: u64) -> (WalFileName, ObjectInfo) {
    let n = WalFileName::parse(name).unwrap();
    let info = ObjectInfo {
        key: layout::wal_key(&n),
        size,
        last_modified: Utc::now(),
    };
    (n, info)
}

fn catalog(json: serde_json::Value) -> BackupCatalog {
    let mut base = serde_json::json!({
        "catalog_version": 1, "id": "20260102-030405F", "label": "l", "kind": "full", "pgvault_version": "0",
        "system_identifier": "1", "pg_version_num": 150000, "timeline": 1, "start_lsn": "0/3000028",
        "stop_lsn": "0/5000100", "stop_timeline": 2, "start_wal": "000000010000000000000003",
        "stop_wal": "000000020000000000000005", "start_time": "2026-01-02T03:04:05Z",
        "stop_time": "2026-01-02T03:04:06Z", "wal_included": false, "snapshot_after_stop": null,
        "size": 0, "stored_size": 0, "compression": "zstd", "encrypted": false, "owner_uid": null,
        "owner_gid": null, "tablespaces": [], "bundles": [], "directories": [], "symlinks": [],
        "files": [], "manifest_sha256": null
    });
    if let (Some(b), Some(extra)) = (base.as_object_mut(), json.as_object()) {
        for (k, v) in extra {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(base).unwrap()
}

#[test]
fn wal_the_target_holds_is_not_copied_again() {
    let source = vec![
        wal("000000010000000000000003", SEG),
        wal("000000010000000000000004", SEG),
        wal("00000002.history", 42),
    ];
    let present: HashMap<String, u64> = [(source[0].1.key.clone(), SEG)].into();
    let plan = plan_wal(&source, &present, &cluster());
    assert_eq!(plan.present, 1);
    let keys: Vec<&str> = plan.jobs.iter().map(|j| j.key.as_str()).collect();
    assert_eq!(keys, [source[1].1.key.as_str(), source[2].1.key.as_str()]);
    assert!(plan.jobs.iter().all(|j| j.create_only));
    assert!(matches!(plan.jobs[0].check, Check::Segment { .. }));
    assert!(matches!(plan.jobs[1].check, Check::Opens));
    assert_eq!(
        plan.items,
        [
            PlanItem::Wal {
                name: "000000010000000000000004".into(),
                bytes: SEG
            },
            PlanItem::Wal {
                name: "00000002.history".into(),
                bytes: 42
            }
        ]
    );
}

#[test]
fn objects_of_an_interrupted_copy_are_reused_only_with_the_right_size() {
    let cat = catalog(serde_json::json!({
        "bundles": [
            {"id": 0, "size": 10, "stored_size": 100},
            {"id": 1, "size": 20, "stored_size": 200},
            {"id": 2, "size": 30, "stored_size": 300}
        ],
        "manifest_sha256": "00"
    }));
    let id = &cat.id;
    let stored: HashMap<String, u64> = [
        (layout::bundle_key(id, 0), 100),
        (layout::bundle_key(id, 1), 200),
        (layout::manifest_key(id), 7),
        (layout::catalog_key(id), 5),
    ]
    .into();
    let present: HashMap<String, u64> = [(layout::bundle_key(id, 0), 100), (layout::bundle_key(id, 1), 150)].into();
    let plan = plan_backup(&cat, &stored, &present);
    assert_eq!(plan.reused, 1);
    let keys: Vec<String> = plan.jobs.iter().map(|j| j.key.clone()).collect();
    // Bundle 1 is there with another size (replaced), bundle 2 is missing from the source
    // (attempted, and reported then), the manifest is not in the target.
    assert_eq!(
        keys,
        [
            layout::bundle_key(id, 1),
            layout::bundle_key(id, 2),
            layout::manifest_key(id)
        ]
    );
    assert!(plan.jobs.iter().all(|j| !j.create_only));
    assert_eq!(
        plan.item,
        PlanItem::Backup {
            id: id.clone(),
            objects: 4,
            bytes: 200 + 7 + 5,
            objects_present: 1
        }
    );
}

fn model_with_switch() -> ArchiveModel {
    let history = parse_history(2, b"1\t0/4800000\tno recovery target specified\n").unwrap();
    let tree = TimelineTree::from_histories([(2, history)]).unwrap();
    let names = [
        "000000010000000000000003",
        "000000010000000000000004",
        "000000020000000000000004",
        "000000020000000000000005",
    ]
    .map(|n| WalFileName::parse(n).unwrap());
    ArchiveModel::new(SEG, tree, names, Vec::new(), HashMap::new()).unwrap()
}

#[test]
fn a_backup_across_a_timeline_switch_needs_the_switch_segment() {
    let model = model_with_switch();
    let mut cat = catalog(serde_json::json!({}));
    let names: Vec<String> = needed_wal(&model, &BackupPoint::from_catalog(&cat))
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "000000010000000000000003",
            "000000020000000000000004",
            "000000020000000000000005"
        ]
    );
    let needed = needed_wal(&model, &BackupPoint::from_catalog(&cat));
    let mut present: HashMap<String, u64> = needed.iter().map(|n| (layout::wal_key(n), SEG)).collect();
    assert!(missing_wal(&needed, &present).is_empty());
    present.remove(&layout::wal_key(&needed[1]));
    assert_eq!(missing_wal(&needed, &present), ["000000020000000000000004"]);
    cat.wal_included = true;
    assert!(needed_wal(&model, &BackupPoint::from_catalog(&cat)).is_empty());
}

fn gap(first: &str, last: &str) -> WalGapMarker {
    WalGapMarker {
        first: WalFileName::parse(first).unwrap(),
        last: WalFileName::parse(last).unwrap(),
        at: Utc::now(),
        reason: crate::repository::gaps::REASON_QUEUE_MAX.into(),
    }
}

#[test]
fn gap_markers_the_target_lacks_are_copied_and_only_those() {
    let source = vec![
        gap("000000010000000000000005", "000000010000000000000007"),
        gap("000000010000000000000009", "000000010000000000000009"),
        gap("000000020000000000000009", "00000002000000000000000B"),
    ];
    let (todo, there) = plan_gaps(&source, &HashMap::new());
    assert_eq!((todo.len(), there), (3, 0), "an empty target lacks every marker");
    // The first is already there (an earlier copy); a marker of another run of the same
    // timeline does not count as it.
    let present: HashMap<String, u64> = [
        (layout::wal_gap_key(&source[0].first, &source[0].last), 90),
        (
            layout::wal_gap_key(
                &source[1].first,
                &WalFileName::parse("00000001000000000000000A").unwrap(),
            ),
            90,
        ),
    ]
    .into();
    let (todo, there) = plan_gaps(&source, &present);
    assert_eq!(there, 1);
    assert_eq!(todo, source[1..].to_vec());
    // Idempotent: once all are there, nothing is left to copy.
    let all: HashMap<String, u64> = source
        .iter()
        .map(|m| (layout::wal_gap_key(&m.first, &m.last), 90))
        .collect();
    let (todo, there) = plan_gaps(&source, &all);
    assert!(todo.is_empty());
    assert_eq!(there, 3);
}

#[test]
fn the_summary_names_gap_markers_in_a_dry_run() {
    let s = CopySummary {
        target: "file:///t".into(),
        dry_run: true,
        gaps_copied: 2,
        gaps_present: 1,
        ..CopySummary::default()
    };
    assert!(
        s.one_line().contains("WAL gap markers: 2 to copy, 1 already there"),
        "{}",
        s.one_line()
    );
    let none = CopySummary::default();
    assert!(!none.one_line().contains("gap"), "{}", none.one_line());
}
