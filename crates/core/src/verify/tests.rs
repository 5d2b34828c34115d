//! Unit tests of verify's judgement over synthetic archives: a whole archive, a gap after the
//! horizon (damage) and before it (expired on purpose: the backups before it restore to their end
//! point), a backup missing its own WAL, a backup carrying its WAL, branches with an abandoned
//! timeline and a `.partial`, a missing history file, `--backup` scope, and the manifest check.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::lsn::{Lsn, TimelineId};
use crate::repository::BackupCatalog;
use crate::timeline::{ArchiveModel, BackupPoint, SegmentTimes, TimelineTree};
use crate::verify::continuity::{assess, Horizon};
use crate::verify::objects::manifest_mismatch;
use crate::verify::report::{Finding, Restorable};
use crate::wal::{WalFileName, WalKind};

const MB16: u64 = 16 << 20;

fn lsn(s: &str) -> Lsn {
    s.parse().expect("test LSN")
}

fn at(m: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).single().expect("date") + Duration::minutes(m)
}

fn seg(tli: TimelineId, n: u64) -> WalFileName {
    WalFileName::from_segment_number(tli, n, MB16)
}

fn segs(tli: TimelineId, r: std::ops::RangeInclusive<u64>) -> Vec<WalFileName> {
    r.map(|n| seg(tli, n)).collect()
}

fn backup(id: &str, tli: TimelineId, start: &str, stop: &str, minute: i64, wal_included: bool) -> BackupPoint {
    BackupPoint {
        id: id.into(),
        start_tli: tli,
        start_lsn: lsn(start),
        stop_tli: tli,
        stop_lsn: lsn(stop),
        stop_time: at(minute),
        wal_included,
    }
}

/// Segment `n` holds commits from minute `10n` to `10n + 9`.
fn times(archive: &[WalFileName]) -> HashMap<WalFileName, SegmentTimes> {
    archive
        .iter()
        .filter(|n| n.kind == WalKind::Segment)
        .map(|n| {
            let m = i64::from(n.seg) * 10;
            let t = SegmentTimes {
                first_commit: Some(at(m)),
                last_commit: Some(at(m + 9)),
                restore_points: Vec::new(),
            };
            (*n, t)
        })
        .collect()
}

fn model(tree: TimelineTree, archive: &[WalFileName], backups: Vec<BackupPoint>) -> ArchiveModel {
    ArchiveModel::new(MB16, tree, archive.iter().copied(), backups, times(archive)).expect("model")
}

fn b1() -> BackupPoint {
    backup("b1", 1, "0/2000028", "0/3000100", 30, false)
}

fn b2() -> BackupPoint {
    backup("b2", 1, "0/6000028", "0/7000100", 70, false)
}

fn gaps(c: &crate::verify::Continuity) -> Vec<(TimelineId, String, String)> {
    c.findings
        .iter()
        .filter_map(|f| match f {
            Finding::WalGap {
                timeline,
                first_missing,
                last_missing,
                ..
            } => Some((*timeline, first_missing.clone(), last_missing.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_whole_archive_has_no_findings_and_one_window() {
    let archive = segs(1, 2..=9);
    let m = model(TimelineTree::default(), &archive, vec![b1(), b2()]);
    let c = assess(&m, &archive, None, None);
    assert_eq!(c.findings, vec![]);
    assert_eq!(
        c.horizon.as_ref().map(|h| (h.lsn, h.source)),
        Some((lsn("0/2000028"), "oldest_backup"))
    );
    assert_eq!(c.timelines.len(), 1);
    assert_eq!(c.timelines[0].windows.len(), 1);
    assert!(c.timelines[0].gaps.is_empty());
    match &c.restorable["b1"] {
        Restorable::Window { timeline, end_lsn, .. } => assert_eq!((*timeline, *end_lsn), (1, lsn("0/A000000"))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_gap_after_the_horizon_is_damage_with_its_time_range() {
    let mut archive = segs(1, 2..=4);
    archive.extend(segs(1, 6..=9));
    let m = model(TimelineTree::default(), &archive, vec![b1(), b2()]);
    let c = assess(&m, &archive, None, None);
    assert_eq!(gaps(&c), vec![(1, seg(1, 5).to_string(), seg(1, 5).to_string())]);
    match &c.findings[..] {
        [Finding::WalGap {
            after,
            before,
            window_from,
            window_end,
            ..
        }] => {
            assert_eq!(*after, Some(at(49)), "last commit before the gap");
            assert_eq!(*before, Some(at(60)), "first commit after it");
            assert_eq!(
                (window_from.as_deref(), *window_end),
                (Some("b1"), Some(lsn("0/5000000")))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(c.timelines[0].gaps.iter().all(|g| g.damage));
    // b1 still restores up to the gap; the gap is what is damaged.
    match &c.restorable["b1"] {
        Restorable::Window { end_lsn, .. } => assert_eq!(*end_lsn, lsn("0/5000000")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_gap_before_the_recorded_horizon_was_expired_on_purpose() {
    let mut archive = segs(1, 2..=3);
    archive.extend(segs(1, 6..=9));
    let m = model(TimelineTree::default(), &archive, vec![b1(), b2()]);
    let h = Horizon {
        timeline: 1,
        lsn: lsn("0/6000028"),
    };
    let c = assess(&m, &archive, Some(h), None);
    assert_eq!(c.findings, vec![], "WAL before the horizon was removed by expire");
    assert_eq!(c.horizon.as_ref().map(|h| h.source), Some("expire"));
    assert_eq!(
        c.restorable["b1"],
        Restorable::EndPoint {
            lsn: lsn("0/3000100"),
            time: at(30)
        }
    );
    assert!(matches!(c.restorable["b2"], Restorable::Window { .. }));
    let g = &c.timelines[0].gaps;
    assert_eq!(g.len(), 1);
    assert!(!g[0].damage);
    assert_eq!(
        (g[0].first_missing.as_str(), g[0].last_missing.as_str()),
        (&*seg(1, 4).to_string(), &*seg(1, 5).to_string())
    );

    // The same hole with the horizon at b1: damage.
    let h = Horizon {
        timeline: 1,
        lsn: lsn("0/2000028"),
    };
    let c = assess(&m, &archive, Some(h), None);
    assert_eq!(gaps(&c), vec![(1, seg(1, 4).to_string(), seg(1, 5).to_string())]);
}

#[test]
fn a_backup_missing_its_own_wal_is_not_restorable_even_before_the_horizon() {
    let mut archive = segs(1, 2..=2);
    archive.extend(segs(1, 6..=9));
    let m = model(TimelineTree::default(), &archive, vec![b1(), b2()]);
    let h = Horizon {
        timeline: 1,
        lsn: lsn("0/6000028"),
    };
    let c = assess(&m, &archive, Some(h), None);
    assert_eq!(
        c.findings,
        vec![Finding::BackupWalMissing {
            backup: "b1".into(),
            segment: seg(1, 3).to_string()
        }]
    );
    assert_eq!(c.restorable["b1"], Restorable::No);
}

#[test]
fn a_backup_carrying_its_wal_needs_the_archive_only_from_its_stop() {
    let archive = segs(1, 3..=6);
    let b = backup("b1", 1, "0/2000028", "0/3000100", 30, true);
    let m = model(TimelineTree::default(), &archive, vec![b]);
    let c = assess(&m, &archive, None, None);
    assert_eq!(c.findings, vec![]);
    assert!(matches!(c.restorable["b1"], Restorable::Window { .. }));
}

/// 1 -> 2 at 0/5800000 (abandoned), 1 -> 3 at 0/8000000 (the newest).
fn branched() -> TimelineTree {
    TimelineTree::from_files([(2, &b"1\t0/5800000\tx\n"[..]), (3, &b"1\t0/8000000\ty\n"[..])]).expect("histories")
}

#[test]
fn branches_holes_on_an_abandoned_timeline_are_not_damage_holes_on_the_newest_are() {
    let mut archive = segs(1, 2..=7);
    archive.push(WalFileName {
        kind: WalKind::Partial,
        ..seg(1, 8)
    });
    archive.extend([seg(2, 5), seg(2, 7)]);
    archive.extend(segs(3, 8..=10));
    let m = model(branched(), &archive, vec![b1()]);
    let c = assess(&m, &archive, None, None);
    assert_eq!(c.findings, vec![], "timeline 2 leads nowhere needed");
    let t2 = c.timelines.iter().find(|t| t.timeline == 2).expect("timeline 2");
    assert!(t2.gaps.iter().all(|g| !g.damage));
    match &c.restorable["b1"] {
        Restorable::Window { timeline, end_lsn, .. } => assert_eq!((*timeline, *end_lsn), (3, lsn("0/B000000"))),
        other => panic!("{other:?}"),
    }

    // A hole on the newest timeline, and one on timeline 1 before the switch, are damage.
    let holed: Vec<WalFileName> = archive
        .iter()
        .copied()
        .filter(|n| *n != seg(3, 9) && *n != seg(1, 6))
        .collect();
    let m = model(branched(), &holed, vec![b1()]);
    let c = assess(&m, &holed, None, None);
    assert_eq!(
        gaps(&c),
        vec![
            (1, seg(1, 6).to_string(), seg(1, 6).to_string()),
            (3, seg(3, 9).to_string(), seg(3, 9).to_string())
        ]
    );
}

#[test]
fn the_end_of_a_timeline_before_its_switch_is_checked() {
    // Timeline 1 stops at segment 5; timeline 3 begins at segment 8: 6 and 7 are lost.
    let mut archive = segs(1, 2..=5);
    archive.extend(segs(3, 8..=9));
    let tree = TimelineTree::from_files([(3, &b"1\t0/8000000\ty\n"[..])]).expect("history");
    let m = model(tree, &archive, vec![b1()]);
    let c = assess(&m, &archive, None, None);
    assert_eq!(gaps(&c), vec![(1, seg(1, 6).to_string(), seg(1, 7).to_string())]);
    assert!(c.timelines.iter().any(|t| t.gaps.iter().any(|g| g.damage)));
}

#[test]
fn a_timeline_without_its_history_file_is_reported() {
    let mut archive = segs(1, 2..=5);
    archive.extend(segs(2, 6..=7));
    let m = model(TimelineTree::default(), &archive, vec![b1()]);
    let c = assess(&m, &archive, None, None);
    assert!(
        c.findings.contains(&Finding::HistoryMissing { timeline: 2 }),
        "{:?}",
        c.findings
    );
    assert!(gaps(&c).is_empty(), "its own segments are contiguous: {:?}", c.findings);
}

#[test]
fn scope_limits_the_judgement_to_one_backup() {
    let mut archive = segs(1, 2..=4);
    archive.extend(segs(1, 6..=9));
    let m = model(TimelineTree::default(), &archive, vec![b1(), b2()]);
    let c = assess(&m, &archive, None, Some("b2"));
    assert_eq!(c.findings, vec![], "the gap lies before b2");
    assert_eq!(c.restorable.keys().collect::<Vec<_>>(), vec!["b2"]);
    let c = assess(&m, &archive, None, Some("b1"));
    assert_eq!(gaps(&c).len(), 1);
}

#[test]
fn no_backups_and_no_horizon_require_nothing() {
    let mut archive = segs(1, 2..=4);
    archive.extend(segs(1, 8..=9));
    let m = model(TimelineTree::default(), &archive, vec![]);
    let c = assess(&m, &archive, None, None);
    assert_eq!(c.findings, vec![]);
    assert_eq!(c.horizon, None);
}

fn catalog(files: serde_json::Value) -> BackupCatalog {
    serde_json::from_value(serde_json::json!({
        "catalog_version": 1, "id": "20260102-030405F", "label": "l", "kind": "full", "pgvault_version": "0",
        "system_identifier": "7", "pg_version_num": 150000, "timeline": 1, "start_lsn": "0/3000028",
        "stop_lsn": "0/3000100", "stop_timeline": 1, "start_wal": "000000010000000000000003",
        "stop_wal": "000000010000000000000003", "start_time": "2026-01-02T03:04:05Z",
        "stop_time": "2026-01-02T03:04:06Z", "wal_included": false, "snapshot_after_stop": null, "size": 0,
        "stored_size": 0, "compression": "zstd", "encrypted": false, "owner_uid": null, "owner_gid": null,
        "tablespaces": [], "bundles": [], "directories": [], "symlinks": [], "files": files,
        "manifest_sha256": null
    }))
    .expect("catalog")
}

#[test]
fn the_manifest_must_list_the_catalogs_files_with_their_sizes() {
    let cat = catalog(serde_json::json!([
        {"path": "PG_VERSION", "size": 3, "mode": 384, "mtime": 0, "pieces": []},
        {"path": "base/1/1259", "size": 8192, "mode": 384, "mtime": 0, "pieces": []}
    ]));
    let body = r#"{"PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "x" },
{ "Encoded-Path": "626173652f312f31323539", "Size": 8192, "Last-Modified": "x" }
],
"#;
    let ok = &crate::backup::manifest::with_trailer(body)[..];
    assert_eq!(manifest_mismatch(&cat, ok), None);
    let size = crate::backup::manifest::with_trailer(&body.replace("\"Size\": 3", "\"Size\": 4"));
    assert!(manifest_mismatch(&cat, &size).is_some_and(|m| m.contains("PG_VERSION")));
    let extra = crate::backup::manifest::with_trailer(&body.replace("PG_VERSION", "PG_VERSION2"));
    assert!(manifest_mismatch(&cat, &extra).is_some_and(|m| m.contains("PG_VERSION2")));
    let tampered = String::from_utf8_lossy(ok).replace("\"Size\": 3", "\"Size\": 4");
    assert!(manifest_mismatch(&cat, tampered.as_bytes()).is_some_and(|m| m.contains("checksum")));
    assert!(manifest_mismatch(&cat, b"not json").is_some());
}

#[test]
fn findings_name_their_backup_and_read_well() {
    let f = Finding::BundleDamaged {
        backup: "b1".into(),
        bundle: 2,
        file: Some("base/1/1259".into()),
        offset: Some(10),
        detail: "SHA-256 mismatch".into(),
    };
    assert_eq!(f.backup(), Some("b1"));
    assert_eq!(
        f.to_string(),
        "backup b1: bundle 2, file base/1/1259 (bundle offset 10): SHA-256 mismatch"
    );
    let g = Finding::WalGap {
        timeline: 1,
        first_missing: seg(1, 5).to_string(),
        last_missing: seg(1, 5).to_string(),
        after: None,
        before: None,
        window_from: Some("b1".into()),
        window_end: Some(lsn("0/5000000")),
        reason: None,
    };
    assert_eq!(g.backup(), None);
    let v = serde_json::to_value(&g).expect("json");
    assert_eq!(v["kind"], "wal_gap");
    assert_eq!(v["first_missing"], "000000010000000000000005");
    assert_eq!(v["window_end"], "0/5000000");
    assert!(
        g.to_string().ends_with("the window from backup b1 ends at 0/5000000"),
        "{g}"
    );
}

#[test]
fn a_dropped_gap_is_reported_with_its_reason() {
    let g = Finding::WalGap {
        timeline: 1,
        first_missing: seg(1, 5).to_string(),
        last_missing: seg(1, 6).to_string(),
        after: None,
        before: None,
        window_from: None,
        window_end: None,
        reason: Some("dropped by archive_push_queue_max at 2026-01-01T00:00:00Z".into()),
    };
    let text = g.to_string();
    assert!(
        text.contains(
            "are missing (dropped by archive_push_queue_max at 2026-01-01T00:00:00Z; take a new full backup)"
        ),
        "{text}"
    );
    let v = serde_json::to_value(&g).expect("json");
    assert_eq!(v["reason"], "dropped by archive_push_queue_max at 2026-01-01T00:00:00Z");
}
