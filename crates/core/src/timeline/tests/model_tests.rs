use super::*;
use crate::timeline::{Gap, ModelError};

fn branched_archive() -> Vec<WalFileName> {
    let mut all = segs(1, 1..=12);
    all.extend(segs(2, 5..=11));
    all.extend(segs(3, 8..=12));
    all.extend(segs(4, 10..=13));
    all.extend([partial(1, 5), partial(2, 10)]);
    all
}

fn b1() -> BackupPoint {
    backup("b1", 1, "0/2000028", "0/3000100", 30, false)
}

fn b3() -> BackupPoint {
    backup("b3", 3, "0/9000028", "0/9000200", 95, false)
}

#[test]
fn expected_segment_follows_xlog_file_read_any_tli() {
    let m = model(branched_tree(), branched_archive(), vec![b1()], HashMap::new());
    for (target, segno, tli) in [
        (1, 12, 1),
        (2, 4, 1),
        (2, 5, 2), // switch inside segment 5: 2 begins there
        (2, 11, 2),
        (3, 7, 1),
        (3, 8, 3), // switch on the boundary of segment 8
        (4, 4, 1),
        (4, 5, 2),
        (4, 9, 2),
        (4, 10, 4),
    ] {
        assert_eq!(
            m.expected_segment(target, segno),
            seg(tli, segno),
            "target {target} segment {segno}"
        );
    }
}

#[test]
fn plan_follows_switch_points() {
    let m = model(branched_tree(), branched_archive(), vec![b1(), b3()], HashMap::new());
    let p = m.plan_recovery(&b1(), 4, None);
    let mut want = segs(1, 2..=4);
    want.extend(segs(2, 5..=9));
    want.extend(segs(4, 10..=13));
    assert_eq!(p.segments, want);
    assert_eq!(p.timeline_path, vec![1, 2, 4]);
    assert!(p.backup_on_path && p.reaches_consistency && !p.gap_ahead);
    assert_eq!(p.first_missing, None);
    assert_eq!(p.reachable_end, Lsn(14 * MB16));
    assert_eq!(p.bytes(), 12 * MB16);
    assert_eq!(p.segment_count(), 12);

    let p = m.plan_recovery(&b1(), 3, None);
    let mut want = segs(1, 2..=7);
    want.extend(segs(3, 8..=12));
    assert_eq!(p.segments, want);

    // A backup on timeline 3 is not on timeline 2's history.
    let p = m.plan_recovery(&b3(), 2, None);
    assert!(!p.backup_on_path);
    assert!(p.segments.is_empty());
    assert!(m.plan_recovery(&b3(), 3, None).backup_on_path);
    assert!(!m.plan_recovery(&b3(), 1, None).backup_on_path);
}

#[test]
fn plan_stops_at_the_end_asked_for() {
    let m = model(TimelineTree::default(), segs(1, 2..=9), vec![b1()], HashMap::new());
    let p = m.plan_recovery(&b1(), 1, Some(lsn("0/6000010")));
    assert_eq!(p.segments, segs(1, 2..=6));
    assert_eq!(p.first_missing, None);
    assert!(p.reaches(lsn("0/6000010")));
    // Beyond the archive's end: the next segment is missing, but it is not a gap.
    let p = m.plan_recovery(&b1(), 1, Some(lsn("0/C000000")));
    assert_eq!(p.first_missing, Some(seg(1, 10)));
    assert!(!p.gap_ahead);
    assert!(!p.reaches(lsn("0/C000000")));
    // An end before the consistent point still reads up to it.
    let p = m.plan_recovery(&b1(), 1, Some(lsn("0/2000030")));
    assert_eq!(p.segments, segs(1, 2..=3));
    assert!(p.reaches_consistency);
}

#[test]
fn partial_files_are_not_read() {
    let tree = TimelineTree::from_files([(2, &b"1\t0/5800000\tx\n"[..])]).unwrap();
    let mut archive = segs(1, 2..=4);
    archive.push(partial(1, 5));
    archive.extend(segs(2, 5..=6));
    let m = model(tree, archive, vec![b1()], HashMap::new());
    assert_eq!(m.partials().copied().collect::<Vec<_>>(), vec![partial(1, 5)]);
    assert!(!m.is_archived(&partial(1, 5)));
    let p = m.plan_recovery(&b1(), 1, None);
    assert_eq!(p.segments, segs(1, 2..=4));
    assert_eq!((p.first_missing, p.gap_ahead), (None, false));
    let p = m.plan_recovery(&b1(), 2, None);
    let mut want = segs(1, 2..=4);
    want.extend(segs(2, 5..=6));
    assert_eq!(p.segments, want);
}

#[test]
fn gap_ends_the_run_and_splits_windows() {
    let mut archive = segs(1, 2..=4);
    archive.extend(segs(1, 6..=9));
    let b2 = backup("b2", 1, "0/6000028", "0/7000100", 70, true);
    let times = ten_minutes_per_segment(&archive);
    let m = model(TimelineTree::default(), archive, vec![b1(), b2.clone()], times);
    let p = m.plan_recovery(&b1(), 1, None);
    assert_eq!(p.segments, segs(1, 2..=4));
    assert_eq!(p.first_missing, Some(seg(1, 5)));
    assert!(p.gap_ahead);
    assert_eq!(p.reachable_end, lsn("0/5000000"));
    assert_eq!(p.reachable_end_time, Some(at(49)));
    assert_eq!(
        m.gaps(),
        vec![Gap {
            tli: 1,
            first_missing: seg(1, 5),
            last_missing: seg(1, 5),
            reason: None
        }]
    );
    let w = m.windows(1);
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!((w[0].start_lsn, w[0].end_lsn), (lsn("0/3000100"), lsn("0/5000000")));
    assert_eq!((w[0].start_time, w[0].end_time), (at(30), Some(at(49))));
    assert_eq!(w[0].ends_at_gap, Some(seg(1, 5)));
    assert_eq!(
        (w[1].from_backup.as_str(), w[1].start_lsn, w[1].end_lsn),
        ("b2", lsn("0/7000100"), lsn("0/A000000"))
    );
    assert_eq!((w[1].end_time, w[1].ends_at_gap), (Some(at(99)), None));
}

#[test]
fn overlapping_windows_merge() {
    let archive = segs(1, 2..=9);
    let b1b = backup("b1b", 1, "0/3000028", "0/4000100", 40, false);
    let m = model(TimelineTree::default(), archive, vec![b1b, b1()], HashMap::new());
    let w = m.windows(1);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].backups, vec!["b1".to_string(), "b1b".to_string()]);
    assert_eq!(
        (w[0].start_lsn, w[0].end_lsn, w[0].end_time),
        (lsn("0/3000100"), lsn("0/A000000"), None)
    );
}

#[test]
fn backups_carrying_their_wal() {
    let bw = backup("bw", 1, "0/2000028", "0/3000100", 30, true);
    let m = model(TimelineTree::default(), vec![], vec![bw.clone()], HashMap::new());
    let p = m.plan_recovery(&bw, 1, None);
    assert!(p.segments.is_empty() && p.reaches_consistency);
    assert_eq!(
        (p.first_missing, p.reachable_end, p.reachable_end_time),
        (None, bw.stop_lsn, Some(at(30)))
    );

    let m = model(
        TimelineTree::default(),
        segs(1, 3..=5),
        vec![bw.clone()],
        HashMap::new(),
    );
    let p = m.plan_recovery(&bw, 1, None);
    assert_eq!(p.segments, segs(1, 3..=5));
    assert_eq!(p.reachable_end, lsn("0/6000000"));

    // The segment holding the consistent point is missing, later ones exist: window is a point.
    let m = model(
        TimelineTree::default(),
        segs(1, 4..=5),
        vec![bw.clone()],
        HashMap::new(),
    );
    let p = m.plan_recovery(&bw, 1, None);
    assert_eq!(
        (p.first_missing, p.gap_ahead, p.reachable_end),
        (Some(seg(1, 3)), true, bw.stop_lsn)
    );
    let w = m.windows(1);
    assert_eq!(
        (w[0].start_lsn, w[0].end_lsn, w[0].ends_at_gap),
        (bw.stop_lsn, bw.stop_lsn, Some(seg(1, 3)))
    );
}

#[test]
fn backup_without_its_wal_is_not_consistent() {
    let m = model(TimelineTree::default(), segs(1, 3..=6), vec![b1()], HashMap::new());
    let p = m.plan_recovery(&b1(), 1, None);
    assert!(!p.reaches_consistency);
    assert_eq!(p.first_missing, Some(seg(1, 2)));
    assert!(m.windows(1).is_empty());
}

#[test]
fn gaps_on_one_branch_only() {
    let mut archive: Vec<WalFileName> = branched_archive()
        .into_iter()
        .filter(|n| *n != seg(2, 7) && *n != seg(4, 10))
        .collect();
    archive.push(seg(1, 14)); // timeline 1 lacks 13
    let m = model(branched_tree(), archive, vec![b1()], HashMap::new());
    assert_eq!(
        m.gaps(),
        vec![
            Gap {
                tli: 1,
                first_missing: seg(1, 13),
                last_missing: seg(1, 13),
                reason: None
            },
            Gap {
                tli: 2,
                first_missing: seg(2, 7),
                last_missing: seg(2, 7),
                reason: None
            },
            Gap {
                tli: 4,
                first_missing: seg(4, 10),
                last_missing: seg(4, 10),
                reason: None
            },
        ]
    );
    // Timeline 3 is untouched.
    assert_eq!(m.plan_recovery(&b1(), 3, None).first_missing, None);
    let p = m.plan_recovery(&b1(), 2, None);
    assert_eq!((p.first_missing, p.gap_ahead), (Some(seg(2, 7)), true));
    let by_tli = m.windows_by_timeline();
    let tlis: Vec<TimelineId> = by_tli.iter().map(|w| w.tli).collect();
    assert_eq!(tlis, vec![1, 3, 4], "leaves and timelines with backups");
    assert!(by_tli.iter().all(|w| w.ancestry_known));
}

#[test]
fn archive_missing_the_oldest_needed_segment_is_a_gap() {
    let m = model(TimelineTree::default(), segs(1, 4..=6), vec![b1()], HashMap::new());
    assert_eq!(
        m.gaps(),
        vec![Gap {
            tli: 1,
            first_missing: seg(1, 2),
            last_missing: seg(1, 3),
            reason: None
        }]
    );
}

#[test]
fn sixty_four_mib_segments() {
    let tree = TimelineTree::from_files([(2, &b"1\t0/5800000\tx\n"[..])]).unwrap();
    let n = |tli, s| WalFileName::from_segment_number(tli, s, MB64);
    let b = backup("b", 1, "0/1000028", "0/2000000", 5, false);
    let archive = vec![n(1, 0), n(1, 1), n(2, 1), n(2, 2)];
    let m = ArchiveModel::new(MB64, tree, archive, vec![b.clone()], HashMap::new()).unwrap();
    assert_eq!(m.expected_segment(2, 0), n(1, 0));
    assert_eq!(m.expected_segment(2, 1), n(2, 1));
    assert_eq!(m.expected_segment(1, 1), n(1, 1));
    let p = m.plan_recovery(&b, 2, None);
    assert_eq!(p.segments, vec![n(1, 0), n(2, 1), n(2, 2)]);
    assert_eq!(p.reachable_end, Lsn(3 * MB64));
    assert_eq!(p.segments[1].to_string(), "000000020000000000000001");
}

#[test]
fn segment_size_is_checked_and_impossible_names_ignored() {
    for bad in [0, 3 << 20, 512 << 10, 2 << 30] {
        let r = ArchiveModel::new(bad, TimelineTree::default(), vec![], vec![], HashMap::new());
        assert_eq!(r.err(), Some(ModelError::BadSegmentSize(bad)));
    }
    let gib = 1 << 30;
    let odd = WalFileName::parse("000000010000000000000004").unwrap();
    let fine = WalFileName::parse("000000010000000000000003").unwrap();
    let m = ArchiveModel::new(gib, TimelineTree::default(), vec![odd, fine], vec![], HashMap::new()).unwrap();
    assert_eq!(m.ignored(), &[odd]);
    assert!(m.is_archived(&fine));
}

#[test]
fn restore_points_only_on_the_path() {
    let mut times = HashMap::new();
    let rp = |name: &str, l: &str, m| crate::timeline::RestorePoint {
        name: name.into(),
        lsn: lsn(l),
        time: at(m),
    };
    times.insert(
        seg(3, 9),
        SegmentTimes {
            restore_points: vec![rp("before-upgrade", "0/9100000", 91)],
            ..Default::default()
        },
    );
    times.insert(
        seg(2, 6),
        SegmentTimes {
            restore_points: vec![rp("before-upgrade", "0/6100000", 61)],
            ..Default::default()
        },
    );
    // Timeline 1's copy of segment 6 is not read along timeline 2.
    times.insert(
        seg(1, 6),
        SegmentTimes {
            restore_points: vec![rp("on-1", "0/6200000", 62)],
            ..Default::default()
        },
    );
    let m = model(branched_tree(), branched_archive(), vec![b1()], times);
    let found = m.find_restore_point("before-upgrade", 2).unwrap();
    assert_eq!((found.point.lsn, found.segment), (lsn("0/6100000"), seg(2, 6)));
    assert_eq!(m.find_restore_point("before-upgrade", 3).unwrap().segment, seg(3, 9));
    assert!(m.find_restore_point("on-1", 2).is_none());
    assert!(m.find_restore_point("on-1", 1).is_some());
    assert!(m.find_restore_point("nope", 1).is_none());
}

#[test]
fn timeline_only_named_by_segments() {
    let mut archive = segs(1, 2..=4);
    archive.extend(segs(5, 0..=6));
    let m = model(TimelineTree::default(), archive, vec![b1()], HashMap::new());
    assert!(m.tree().path(5).is_err());
    let p = m.plan_recovery(&b1(), 5, None);
    assert!(!p.ancestry_known && p.target_history_missing && !p.backup_on_path);
    let w = m.windows_by_timeline();
    assert_eq!(
        w.iter().map(|w| (w.tli, w.ancestry_known)).collect::<Vec<_>>(),
        vec![(1, true), (5, false)]
    );
}

#[test]
fn consistency_segments_cross_a_switch_during_the_backup() {
    // Started on timeline 1 in segment 4, promoted to 2 at 0/5800000, stopped in segment 6.
    let b = BackupPoint {
        stop_tli: 2,
        stop_lsn: lsn("0/6000100"),
        ..backup("b", 1, "0/4000028", "0/0", 60, false)
    };
    let m = model(branched_tree(), branched_archive(), vec![b.clone()], HashMap::new());
    assert_eq!(m.consistency_segments(&b), vec![seg(1, 4), seg(2, 5), seg(2, 6)]);
    // A stop point on a segment boundary does not need the next segment.
    let b = BackupPoint {
        stop_lsn: lsn("0/6000000"),
        ..b
    };
    assert_eq!(m.consistency_segments(&b), vec![seg(1, 4), seg(2, 5)]);
    assert_eq!(m.plan_recovery(&b, 2, None).segments.first(), Some(&seg(1, 4)));
}

#[test]
fn a_declared_gap_gives_its_reason_to_the_gaps_it_overlaps() {
    let mut m = model(
        TimelineTree::default(),
        [segs(1, 2..=4), segs(1, 8..=9)].concat(),
        vec![b1()],
        HashMap::new(),
    );
    assert_eq!(m.gaps()[0].reason, None, "an undeclared hole has no reason");
    m.set_declared_gaps(vec![crate::timeline::DeclaredGap {
        first: seg(1, 6),
        last: seg(1, 7),
        reason: "dropped by archive_push_queue_max at 2026-01-01T00:00:00Z".into(),
    }]);
    let g = m.gaps();
    assert_eq!((g[0].first_missing, g[0].last_missing), (seg(1, 5), seg(1, 7)));
    assert_eq!(
        g[0].reason.as_deref(),
        Some("dropped by archive_push_queue_max at 2026-01-01T00:00:00Z")
    );
    assert!(m
        .missing_reason(&seg(1, 6))
        .is_some_and(|r| r.starts_with("dropped by")));
    assert_eq!(m.missing_reason(&seg(1, 5)), None, "outside the declared run");
    assert_eq!(m.missing_reason(&seg(2, 6)), None, "another timeline");
}
