use super::*;
use crate::timeline::{parse_history, HistoryEntry, TimelineError, TimelineSpan};

#[test]
fn parses_postgres_history_files() {
    let text = b"# written by PostgreSQL\n\n1\t0/5800000\tbefore 2026-11-23 00:10:00+00\n  2\t0/A800000\tat restore point \"x y\"\r\n";
    let h = parse_history(4, text).unwrap();
    assert_eq!(
        h,
        vec![
            HistoryEntry {
                parent: 1,
                switch_lsn: lsn("0/5800000"),
                reason: "before 2026-11-23 00:10:00+00".into()
            },
            HistoryEntry {
                parent: 2,
                switch_lsn: lsn("0/A800000"),
                reason: "at restore point \"x y\"".into()
            },
        ]
    );
    // No reason at all is accepted, as PostgreSQL's sscanf does.
    assert_eq!(
        parse_history(2, b"1\t16/B374D848").unwrap()[0].switch_lsn,
        lsn("16/B374D848")
    );
}

#[test]
fn refuses_what_postgres_would_not_write() {
    let cases: &[(TimelineId, &[u8])] = &[
        (1, b"1\t0/1\tx\n"),
        (0, b""),
        (2, b""),
        (2, b"# only a comment\n"),
        (2, b"2\t0/5000000\tparent not below\n"),
        (3, b"2\t0/5000000\ta\n1\t0/6000000\tdecreasing parents\n"),
        (3, b"1\t0/5000000\ta\n1\t0/6000000\trepeated parent\n"),
        (3, b"1\t0/6000000\ta\n2\t0/5000000\tswitch goes back\n"),
        (2, b"x\t0/5000000\tnot a number\n"),
        (2, b"0x1\t0/5000000\thex parent\n"),
        (2, b"0\t0/5000000\ttimeline zero\n"),
        (2, b"1\t5000000\tno slash\n"),
        (2, b"1\t0/0\tinvalid switch point\n"),
        (2, b"1\t0/123456789\ttoo many digits\n"),
        (2, b"1\n"),
        (2, b"99999999999\t0/1\tparent overflows\n"),
    ];
    for (tli, text) in cases {
        assert!(
            parse_history(*tli, text).is_err(),
            "{tli} {:?} should be refused",
            String::from_utf8_lossy(text)
        );
    }
    let big = vec![b'#'; crate::timeline::MAX_HISTORY_BYTES + 1];
    assert!(matches!(parse_history(2, &big), Err(TimelineError::TooLarge { .. })));
    assert!(matches!(
        parse_history(3, b"2\t0/5\ta\n1\t0/6\tb\n"),
        Err(TimelineError::ParentOrder {
            line: 2,
            parent: 1,
            previous: 2,
            ..
        })
    ));
}

#[test]
fn history_files_must_agree() {
    let err = TimelineTree::from_files([
        (2, &b"1\t0/5800000\ta\n"[..]),
        (3, &b"1\t0/5000000\ta\n2\t0/6000000\tb\n"[..]),
    ])
    .unwrap_err();
    assert_eq!(err, TimelineError::Inconsistent { tli: 3, parent: 2 });
}

#[test]
fn paths_and_membership() {
    let tree = branched_tree();
    assert_eq!(
        tree.path(4).unwrap(),
        vec![
            TimelineSpan {
                tli: 1,
                begin: Lsn(0),
                end: Some(lsn("0/5800000"))
            },
            TimelineSpan {
                tli: 2,
                begin: lsn("0/5800000"),
                end: Some(lsn("0/A800000"))
            },
            TimelineSpan {
                tli: 4,
                begin: lsn("0/A800000"),
                end: None
            },
        ]
    );
    assert_eq!(
        tree.path(1).unwrap(),
        vec![TimelineSpan {
            tli: 1,
            begin: Lsn(0),
            end: None
        }]
    );
    // Timeline 1 before the switch point is on 2's history; at or after it is not.
    assert!(tree.contains(2, 1, lsn("0/57FFFFF")));
    assert!(!tree.contains(2, 1, lsn("0/5800000")));
    assert!(tree.contains(2, 2, lsn("0/5800000")));
    assert!(!tree.contains(2, 3, lsn("0/8000000")));
    assert!(!tree.contains(3, 2, lsn("0/6000000")));
    assert!(tree.contains(4, 2, lsn("0/9000000")));
    assert!(!tree.contains(4, 2, lsn("0/A800000")));
    // An end position exactly at the switch point is still on the history.
    assert!(tree.contains_end(2, 1, lsn("0/5800000")));
    assert!(!tree.contains_end(2, 1, lsn("0/5800001")));
    assert_eq!(tree.children(1), vec![2, 3]);
    assert_eq!(tree.children(2), vec![4]);
    assert_eq!(tree.parent(4), Some(2));
}

#[test]
fn latest_probes_like_postgres() {
    let tree = branched_tree();
    assert_eq!(tree.latest(), 4);
    assert_eq!(tree.latest_from(3), 4);
    // 00000003.history missing: PostgreSQL's probe stops at 2 even though 4 exists.
    let tree = TimelineTree::from_files([
        (2, &b"1\t0/5800000\ta\n"[..]),
        (4, &b"1\t0/5800000\ta\n2\t0/A800000\tb\n"[..]),
    ])
    .unwrap();
    assert_eq!(tree.latest(), 2);
    assert_eq!(tree.latest_from(3), 4);
    assert_eq!(tree.highest_known(), 4);
}

#[test]
fn ancestry_without_a_history_file() {
    let mut tree = TimelineTree::from_files([(4, &b"1\t0/5800000\ta\n2\t0/A800000\tb\n"[..])]).unwrap();
    // 2 has no file of its own, but 4's file lists it.
    assert_eq!(tree.path(2).unwrap().last().map(|s| s.begin), Some(lsn("0/5800000")));
    assert!(!tree.has_history(2));
    assert_eq!(tree.path(7), Err(TimelineError::UnknownTimeline { tli: 7 }));
    tree.note_timeline(7);
    assert_eq!(tree.path(7), Err(TimelineError::AncestryUnknown { tli: 7 }));
    let (path, known) = tree.path_or_root(7);
    assert!(!known);
    assert_eq!(
        path,
        vec![TimelineSpan {
            tli: 7,
            begin: Lsn(0),
            end: None
        }]
    );
}
