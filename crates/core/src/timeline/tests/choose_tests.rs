use super::*;
use crate::timeline::{ChoiceError, ModelTarget, RestorePoint, TimelineSpec};

fn no_xid(_: &BackupPoint) -> Option<bool> {
    None
}

/// Linear archive, segments 2..=9 with ten minutes of commits each, backups b1 (consistent at
/// minute 30, segment 3) and b2 (minute 60, segment 6).
fn linear(missing: &[u64]) -> ArchiveModel {
    let archive: Vec<WalFileName> = segs(1, 2..=9)
        .into_iter()
        .filter(|s| !missing.contains(&s.segment_number(MB16)))
        .collect();
    let times = ten_minutes_per_segment(&archive);
    let b1 = backup("b1", 1, "0/2000028", "0/3000100", 30, false);
    let b2 = backup("b2", 1, "0/5000028", "0/6000100", 60, false);
    model(TimelineTree::default(), archive, vec![b2, b1], times)
}

fn choose(m: &ArchiveModel, target: ModelTarget, tli: TimelineId) -> Result<crate::timeline::Choice, ChoiceError> {
    m.choose_backup(&target, tli, None, &no_xid)
}

#[test]
fn newest_backup_before_the_target() {
    let m = linear(&[]);
    assert_eq!(choose(&m, ModelTarget::End, 1).unwrap().backup.id, "b2");
    assert_eq!(choose(&m, ModelTarget::Time(at(45)), 1).unwrap().backup.id, "b1");
    // Clock edge: a target equal to the stop time can use that backup.
    assert_eq!(choose(&m, ModelTarget::Time(at(60)), 1).unwrap().backup.id, "b2");
    assert_eq!(
        choose(&m, ModelTarget::Lsn(lsn("0/6000100")), 1).unwrap().backup.id,
        "b2"
    );
    assert_eq!(
        choose(&m, ModelTarget::Lsn(lsn("0/60000FF")), 1).unwrap().backup.id,
        "b1"
    );
    let c = choose(&m, ModelTarget::Immediate, 1).unwrap();
    assert_eq!(c.backup.id, "b2");
    assert_eq!(c.plan.segments, segs(1, 5..=6));
}

#[test]
fn clock_edges_refuse_with_the_window() {
    let m = linear(&[]);
    match choose(&m, ModelTarget::Time(at(29)), 1) {
        Err(ChoiceError::TargetBeforeOldest {
            oldest, oldest_time, ..
        }) => {
            assert_eq!((oldest.as_str(), oldest_time), ("b1", at(30)))
        }
        other => panic!("{other:?}"),
    }
    // The newest commit is at minute 99: PostgreSQL needs a commit after the target to stop.
    match choose(&m, ModelTarget::Time(at(99)), 1) {
        Err(ChoiceError::BeyondEnd { end_lsn, end_time, .. }) => {
            assert_eq!((end_lsn, end_time), (lsn("0/A000000"), Some(at(99))))
        }
        other => panic!("{other:?}"),
    }
    assert!(choose(&m, ModelTarget::Time(at(98)), 1).is_ok());
    assert!(matches!(
        choose(&m, ModelTarget::Lsn(lsn("0/A000000")), 1),
        Err(ChoiceError::BeyondEnd { .. })
    ));
    assert!(matches!(
        choose(&m, ModelTarget::Lsn(lsn("0/3000000")), 1),
        Err(ChoiceError::TargetBeforeOldest { .. })
    ));
}

#[test]
fn time_plan_stops_at_the_first_commit_after_the_target() {
    let m = linear(&[]);
    let c = choose(&m, ModelTarget::Time(at(75)), 1).unwrap();
    assert_eq!(c.plan.segments, segs(1, 5..=7));
    assert_eq!(c.plan.reachable_end, lsn("0/8000000"));
}

#[test]
fn gaps_refuse_targets_beyond_them() {
    let m = linear(&[7]);
    match choose(&m, ModelTarget::End, 1) {
        Err(e @ ChoiceError::GapAfterBackup { .. }) => {
            let ChoiceError::GapAfterBackup {
                id,
                first_missing,
                reachable_lsn,
                reachable_time,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(
                (id.as_str(), *first_missing, *reachable_lsn, *reachable_time),
                ("b2", seg(1, 7), lsn("0/7000000"), Some(at(69)))
            );
            let text = e.to_string();
            assert!(
                text.contains("000000010000000000000007") && text.contains("0/7000000"),
                "{text}"
            );
            assert!(!text.contains("--"), "no CLI flags in core messages: {text}");
        }
        other => panic!("{other:?}"),
    }
    // Targets before the gap restore; after it they are refused naming it.
    assert!(choose(&m, ModelTarget::Lsn(lsn("0/6FFFFFF")), 1).is_ok());
    assert!(choose(&m, ModelTarget::Time(at(68)), 1).is_ok());
    for target in [
        ModelTarget::Lsn(lsn("0/7000000")),
        ModelTarget::Time(at(69)),
        ModelTarget::Time(at(85)),
    ] {
        match choose(&m, target.clone(), 1) {
            Err(ChoiceError::GapBeforeTarget {
                first_missing,
                reachable_lsn,
                ..
            }) => {
                assert_eq!(
                    (first_missing, reachable_lsn),
                    (seg(1, 7), lsn("0/7000000")),
                    "{target}"
                )
            }
            other => panic!("{target}: {other:?}"),
        }
    }
}

#[test]
fn backup_whose_wal_is_gone_gives_way_to_an_older_one() {
    // b2 needs segment 5, which is gone; b1 needs it too, so nothing reaches the end...
    let m = linear(&[5]);
    assert!(matches!(
        choose(&m, ModelTarget::End, 1),
        Err(ChoiceError::GapAfterBackup { .. })
    ));
    // ...but b1 reaches a point before the gap.
    assert_eq!(choose(&m, ModelTarget::Time(at(42)), 1).unwrap().backup.id, "b1");
    // A named backup that cannot be made consistent is refused.
    assert!(matches!(
        m.choose_backup(&ModelTarget::Immediate, 1, Some("b2"), &no_xid),
        Err(ChoiceError::NotConsistent { first_missing, .. }) if first_missing == seg(1, 5)
    ));
}

#[test]
fn explicit_backups_are_checked() {
    let m = linear(&[]);
    assert_eq!(
        m.choose_backup(&ModelTarget::Time(at(75)), 1, Some("b1"), &no_xid)
            .unwrap()
            .backup
            .id,
        "b1"
    );
    assert!(matches!(
        m.choose_backup(&ModelTarget::Time(at(45)), 1, Some("b2"), &no_xid),
        Err(ChoiceError::BackupAfterTarget { .. })
    ));
    assert!(matches!(
        m.choose_backup(&ModelTarget::End, 1, Some("b9"), &no_xid),
        Err(ChoiceError::UnknownBackup { .. })
    ));
    assert_eq!(
        m.choose_backup(&ModelTarget::End, 1, Some("latest"), &no_xid)
            .unwrap()
            .backup
            .id,
        "b2"
    );
    let empty = model(TimelineTree::default(), vec![], vec![], HashMap::new());
    assert_eq!(choose(&empty, ModelTarget::End, 1), Err(ChoiceError::NoBackups));
}

fn branched() -> ArchiveModel {
    let mut archive = segs(1, 1..=12);
    archive.extend(segs(2, 5..=11));
    archive.extend(segs(3, 8..=12));
    archive.extend(segs(4, 10..=13));
    let times = ten_minutes_per_segment(&archive);
    let b1 = backup("b1", 1, "0/2000028", "0/3000100", 30, false);
    let b2 = backup("b2", 2, "0/6000028", "0/6000200", 61, false);
    let b3 = backup("b3", 3, "0/9000028", "0/9000200", 95, false);
    model(branched_tree(), archive, vec![b1, b2, b3], times)
}

#[test]
fn a_backup_on_another_branch_is_never_chosen() {
    let m = branched();
    // b3 is newer and before the target in time and LSN, but on timeline 3.
    assert_eq!(choose(&m, ModelTarget::Time(at(100)), 2).unwrap().backup.id, "b2");
    assert_eq!(
        choose(&m, ModelTarget::Lsn(lsn("0/A000000")), 2).unwrap().backup.id,
        "b2"
    );
    assert_eq!(choose(&m, ModelTarget::End, 2).unwrap().backup.id, "b2");
    assert_eq!(choose(&m, ModelTarget::End, 3).unwrap().backup.id, "b3");
    assert_eq!(choose(&m, ModelTarget::End, 4).unwrap().backup.id, "b2");
    assert_eq!(choose(&m, ModelTarget::End, 1).unwrap().backup.id, "b1");
    assert!(matches!(
        m.choose_backup(&ModelTarget::End, 2, Some("b3"), &no_xid),
        Err(ChoiceError::NotOnPath {
            stop_tli: 3,
            target_tli: 2,
            ..
        })
    ));
    let c = choose(&m, ModelTarget::End, 4).unwrap();
    assert_eq!(c.plan.timeline_path, vec![2, 4]);
    assert!(matches!(
        choose(&m, ModelTarget::End, 9),
        Err(ChoiceError::UnknownTimeline { target_tli: 9 })
    ));
}

#[test]
fn timelines_resolve_like_postgres() {
    let m = branched();
    let b1 = m.backups()[0].clone();
    let b3 = m.backups()[2].clone();
    assert_eq!(m.resolve_timeline(TimelineSpec::Latest, &b1), 4);
    assert_eq!(m.resolve_timeline(TimelineSpec::Current, &b3), 3);
    assert_eq!(m.resolve_timeline(TimelineSpec::Id(2), &b1), 2);
    let c = m
        .choose_backup_for(&ModelTarget::End, TimelineSpec::Latest, None, &no_xid)
        .unwrap();
    assert_eq!((c.target_tli, c.backup.id.as_str()), (4, "b2"));
    let c = m
        .choose_backup_for(&ModelTarget::End, TimelineSpec::Current, Some("b3"), &no_xid)
        .unwrap();
    assert_eq!(c.target_tli, 3);
    let c = m
        .choose_backup_for(&ModelTarget::Time(at(50)), TimelineSpec::Current, None, &no_xid)
        .unwrap();
    assert_eq!((c.target_tli, c.backup.id.as_str()), (1, "b1"));
}

#[test]
fn restore_point_targets() {
    let mut m_times = HashMap::new();
    let rp = |l: &str, minute| RestorePoint {
        name: "before-upgrade".into(),
        lsn: lsn(l),
        time: at(minute),
    };
    m_times.insert(
        seg(1, 4),
        SegmentTimes {
            restore_points: vec![rp("0/4100000", 41)],
            ..Default::default()
        },
    );
    m_times.insert(
        seg(1, 8),
        SegmentTimes {
            restore_points: vec![rp("0/8100000", 81)],
            ..Default::default()
        },
    );
    let b1 = backup("b1", 1, "0/2000028", "0/3000100", 30, false);
    let b2 = backup("b2", 1, "0/5000028", "0/6000100", 60, false);
    let m = model(
        TimelineTree::default(),
        segs(1, 2..=9),
        vec![b1.clone(), b2.clone()],
        m_times.clone(),
    );
    // Recovery stops at the first point of that name after the backup's start: from b2, 0/8100000.
    let c = choose(&m, ModelTarget::Name("before-upgrade".into()), 1).unwrap();
    assert_eq!(c.backup.id, "b2");
    assert_eq!(c.restore_point.map(|p| p.point.lsn), Some(lsn("0/8100000")));
    assert_eq!(c.plan.segments, segs(1, 5..=8));
    assert!(matches!(
        choose(&m, ModelTarget::Name("nope".into()), 1),
        Err(ChoiceError::RestorePointNotFound { .. })
    ));
    // Segment 6 gone: b2 cannot be made consistent; from b1 recovery meets the first point of
    // that name, before the gap.
    let archive: Vec<WalFileName> = segs(1, 2..=9).into_iter().filter(|s| *s != seg(1, 6)).collect();
    let m = model(
        TimelineTree::default(),
        archive.clone(),
        vec![b1.clone(), b2.clone()],
        m_times.clone(),
    );
    let c = choose(&m, ModelTarget::Name("before-upgrade".into()), 1).unwrap();
    assert_eq!(
        (c.backup.id.as_str(), c.restore_point.map(|p| p.point.lsn)),
        ("b1", Some(lsn("0/4100000")))
    );
    // With only the later point, it lies behind the gap.
    m_times.remove(&seg(1, 4));
    let m = model(TimelineTree::default(), archive, vec![b1, b2], m_times);
    assert!(matches!(
        choose(&m, ModelTarget::Name("before-upgrade".into()), 1),
        Err(ChoiceError::GapBeforeTarget { first_missing, .. }) if first_missing == seg(1, 6)
    ));
}

#[test]
fn transaction_targets_use_the_callers_answer() {
    let m = linear(&[]);
    let after_b1_only = |b: &BackupPoint| Some(b.id == "b1");
    let c = m
        .choose_backup(&ModelTarget::Xid { full: (1 << 32) + 5 }, 1, None, &after_b1_only)
        .unwrap();
    assert_eq!(c.backup.id, "b1");
    let never = |_: &BackupPoint| Some(false);
    assert!(matches!(
        m.choose_backup(&ModelTarget::Xid { full: 7 }, 1, None, &never),
        Err(ChoiceError::XidTooOld { xid: 7, .. })
    ));
    // Unknown: the newest is used; PostgreSQL fails itself if it never meets the transaction.
    assert_eq!(
        m.choose_backup(&ModelTarget::Xid { full: 7 }, 1, None, &no_xid)
            .unwrap()
            .backup
            .id,
        "b2"
    );
}

#[test]
fn unknown_times_do_not_refuse_time_targets() {
    let b1 = backup("b1", 1, "0/2000028", "0/3000100", 30, false);
    let m = model(TimelineTree::default(), segs(1, 2..=9), vec![b1], HashMap::new());
    let c = choose(&m, ModelTarget::Time(at(500)), 1).unwrap();
    assert_eq!(c.plan.reachable_end_time, None);
    assert_eq!(c.plan.segments, segs(1, 2..=9));
}

#[test]
fn wal_included_backup_restores_without_archive() {
    let bw = backup("bw", 1, "0/2000028", "0/3000100", 30, true);
    let m = model(TimelineTree::default(), vec![], vec![bw], HashMap::new());
    let c = choose(&m, ModelTarget::Immediate, 1).unwrap();
    assert!(c.plan.segments.is_empty());
    assert!(choose(&m, ModelTarget::End, 1).is_ok());
    assert!(matches!(
        choose(&m, ModelTarget::Time(at(31)), 1),
        Err(ChoiceError::BeyondEnd { .. })
    ));
}

#[test]
fn time_beyond_a_gap_is_refused_even_without_times_before_it() {
    // Old segments 2..=4 have no recorded times; 6..=9 (after the gap at 5) do.
    let b1 = backup("b1", 1, "0/2000028", "0/3000100", 30, false);
    let mut archive = segs(1, 2..=4);
    archive.extend(segs(1, 6..=9));
    let times = ten_minutes_per_segment(&segs(1, 6..=9));
    let m = model(TimelineTree::default(), archive, vec![b1], times);
    // The first commit after the gap is at minute 60: a target at or after it needs segment 5.
    match choose(&m, ModelTarget::Time(at(60)), 1) {
        Err(ChoiceError::GapBeforeTarget {
            first_missing,
            reachable_lsn,
            reachable_time,
            ..
        }) => {
            assert_eq!(
                (first_missing, reachable_lsn, reachable_time),
                (seg(1, 5), lsn("0/5000000"), None)
            )
        }
        other => panic!("{other:?}"),
    }
    // Before it, the target may lie in the run: allowed (PostgreSQL fails if it does not).
    assert!(choose(&m, ModelTarget::Time(at(59)), 1).is_ok());
}

#[test]
fn latest_is_resolved_from_each_backups_timeline() {
    // 00000002.history is missing: from timeline 1, PostgreSQL's probe stops at 1; from a backup
    // on timeline 3 it finds 4.
    let tree = TimelineTree::from_files([
        (3, &b"1\t0/5800000\ta\n2\t0/7000000\tb\n"[..]),
        (4, &b"1\t0/5800000\ta\n2\t0/7000000\tb\n3\t0/9000000\tc\n"[..]),
    ])
    .unwrap();
    let b1 = backup("b1", 1, "0/2000028", "0/3000100", 30, false);
    let b3 = backup("b3", 3, "0/8000028", "0/8000200", 80, false);
    let mut archive = segs(1, 2..=5);
    archive.extend(segs(2, 5..=7));
    archive.extend(segs(3, 7..=9));
    archive.extend(segs(4, 9..=10));
    let m = model(tree, archive, vec![b1.clone(), b3], HashMap::new());
    assert_eq!(m.tree().latest(), 1);
    let c = m
        .choose_backup_for(&ModelTarget::End, TimelineSpec::Latest, None, &no_xid)
        .unwrap();
    assert_eq!((c.target_tli, c.backup.id.as_str()), (4, "b3"));
    // Named b1 resolves `latest` to 1, as PostgreSQL would from it.
    let c = m
        .choose_backup_for(&ModelTarget::End, TimelineSpec::Latest, Some("b1"), &no_xid)
        .unwrap();
    assert_eq!((c.target_tli, c.backup.id.as_str()), (1, "b1"));
}

#[test]
fn a_refusal_at_a_dropped_gap_says_why() {
    let mut m = linear(&[7]);
    let plain = choose(&m, ModelTarget::End, 1).expect_err("gap").to_string();
    assert!(!plain.contains("dropped"), "{plain}");
    m.set_declared_gaps(vec![crate::timeline::DeclaredGap {
        first: seg(1, 7),
        last: seg(1, 7),
        reason: "dropped by archive_push_queue_max at 2026-01-01T00:00:00Z".into(),
    }]);
    for target in [ModelTarget::End, ModelTarget::Lsn(lsn("0/8000000"))] {
        let text = choose(&m, target, 1).expect_err("gap").to_string();
        assert!(
            text.contains("000000010000000000000007 is missing")
                && text.contains("(dropped by archive_push_queue_max at 2026-01-01T00:00:00Z;"),
            "{text}"
        );
    }
}
