//! Real WAL written by PostgreSQL 15 and 18 (`crates/core/tests/data/wal`, see its README),
//! summarized and compared with what `pg_waldump` read from the same files (the `.waldump` file
//! next to each segment: its record count and its commit, abort, restore-point,
//! end-of-recovery and switch lines, printed with `TZ=UTC`).

use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::*;

const SEG: u64 = 1024 * 1024;

fn data(tag: &str, file: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/wal")
        .join(tag)
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Debug, Default)]
struct Expected {
    records: u64,
    /// Commit and abort records: (lsn, time).
    xacts: Vec<(Lsn, DateTime<Utc>)>,
    restore_points: Vec<(String, Lsn)>,
    switch: Option<TimelineSwitch>,
}

/// Reads pg_waldump's lines (`rmgr: ... lsn: 0/0071E730, prev ..., desc: COMMIT 2026-... UTC`).
fn expected(tag: &str, file: &str) -> Expected {
    let text = String::from_utf8(data(tag, &format!("{file}.waldump"))).unwrap();
    let mut e = Expected::default();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("records: ") {
            e.records = n.parse().unwrap();
            continue;
        }
        let lsn: Lsn = line
            .split("lsn: ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let desc = line.split("desc: ").nth(1).unwrap();
        if let Some(t) = desc.strip_prefix("COMMIT ").or_else(|| desc.strip_prefix("ABORT ")) {
            let t = t.split(';').next().unwrap().trim().strip_suffix(" UTC").unwrap();
            let t = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
                .unwrap()
                .and_utc();
            e.xacts.push((lsn, t));
        } else if let Some(n) = desc.strip_prefix("RESTORE_POINT ") {
            e.restore_points.push((n.trim().to_string(), lsn));
        } else if let Some(rest) = desc.strip_prefix("END_OF_RECOVERY tli ") {
            let to = rest.split(';').next().unwrap().parse().unwrap();
            let from = rest
                .split("prev tli ")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            e.switch = Some(TimelineSwitch { from, to, lsn });
        }
    }
    e
}

/// Summarizes one real file and compares it with pg_waldump's reading.
fn matches_waldump(tag: &str, major: u32, file: &str) -> WalSummary {
    let name = WalFileName::parse(file).unwrap();
    let s = summarize_segment(&name, &data(tag, file), SEG, major);
    let e = expected(tag, file);
    assert!(s.complete, "{tag}/{file}: {s:?}");
    assert_eq!(s.records, e.records, "{tag}/{file}: record count");
    assert_eq!(s.first_commit, e.xacts.iter().map(|x| x.1).min(), "{tag}/{file}");
    assert_eq!(s.last_commit, e.xacts.iter().map(|x| x.1).max(), "{tag}/{file}");
    let found: Vec<_> = s.restore_points.iter().map(|r| (r.name.clone(), r.lsn)).collect();
    assert_eq!(found, e.restore_points, "{tag}/{file}");
    for rp in &s.restore_points {
        // pg_waldump does not print the time: it lies between the transactions around it.
        let before = e.xacts.iter().filter(|x| x.0 < rp.lsn).map(|x| x.1).max();
        let after = e.xacts.iter().filter(|x| x.0 > rp.lsn).map(|x| x.1).min();
        assert!(
            before.is_none_or(|b| b <= rp.time) && after.is_none_or(|a| rp.time <= a),
            "{rp:?}"
        );
    }
    assert_eq!(s.timeline_switch, e.switch, "{tag}/{file}");
    s
}

#[test]
fn pg15_commits_aborts_and_a_restore_point() {
    let s = matches_waldump("pg15", 15, "000000010000000000000007");
    assert_eq!(s.restore_points[0].name, "before_x");
    assert_eq!(s.first_commit.unwrap().to_rfc3339(), "2026-12-01T21:31:28.691336+00:00");
    // The segment was switched: its last record is the switch record.
    assert_eq!(s.last_record_end, Some("0/71E890".parse().unwrap()));
}

#[test]
fn pg15_continuation_from_the_previous_segment() {
    // Starts with the tail of a 3 kB insert begun in segment 9; records cross pages throughout.
    let s = matches_waldump("pg15", 15, "00000001000000000000000A");
    assert_eq!(s.restore_points[0].name, "after_big");
}

#[test]
fn pg15_first_segment_of_a_new_timeline() {
    let s = matches_waldump("pg15", 15, "00000002000000000000000C");
    assert_eq!(s.timeline_switch.map(|t| (t.from, t.to)), Some((1, 2)));
    matches_waldump("pg15", 15, "00000001000000000000000C.partial");
}

#[test]
fn pg18_parses_like_pg15() {
    let s = matches_waldump("pg18", 18, "000000010000000000000008");
    assert_eq!(s.restore_points[0].name, "before_x");
    matches_waldump("pg18", 18, "00000001000000000000000B");
    let s = matches_waldump("pg18", 18, "00000002000000000000000D");
    assert_eq!(s.timeline_switch.map(|t| (t.from, t.to)), Some((1, 2)));
}

#[test]
fn summary_round_trips_as_json() {
    let name = WalFileName::parse("000000010000000000000007").unwrap();
    let s = summarize_segment(&name, &data("pg15", "000000010000000000000007"), SEG, 15);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<WalSummary>(&json).unwrap(), s);
    // A summary written before the optional fields existed still reads.
    let old = r#"{"first_commit":null,"last_commit":null,"restore_points":[],"records":0,"complete":true,"last_record_end":null}"#;
    assert!(serde_json::from_str::<WalSummary>(old).unwrap().complete);
}

fn sysid(seg: &[u8]) -> u64 {
    u64::from_le_bytes(seg[24..32].try_into().unwrap())
}

#[test]
fn segment_check_follows_timelines() {
    for (tag, major, tl1, tl2) in [
        ("pg15", 15, "000000010000000000000007", "00000002000000000000000C"),
        ("pg18", 18, "000000010000000000000008", "00000002000000000000000D"),
    ] {
        let one = data(tag, tl1);
        let id = sysid(&one);
        let check = |name: &str, d: &[u8]| check_segment(&WalFileName::parse(name).unwrap(), d, id, SEG, major);
        check(tl1, &one).unwrap();
        // The first segment of timeline 2 starts with timeline 1's pages: accepted.
        let two = data(tag, tl2);
        assert_eq!(
            read_segment_header(&WalFileName::parse(tl2).unwrap(), &two)
                .unwrap()
                .timeline,
            1
        );
        check(tl2, &two).unwrap();
        // A timeline-1 segment under a timeline-2 name: refused.
        let renamed = format!("00000002{}", &tl1[8..]);
        let err = check(&renamed, &one).unwrap_err();
        assert!(matches!(err, WalError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("timeline"), "{err}");
        // The timeline-2 segment under a timeline-3 name: it starts timeline 2, not 3.
        assert!(matches!(
            check(&format!("00000003{}", &tl2[8..]), &two),
            Err(WalError::Foreign { .. })
        ));
        // And a newer timeline's pages under an older timeline's name.
        let mut newer = one.clone();
        newer[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(check(tl1, &newer), Err(WalError::Foreign { .. })));
    }
    let partial = data("pg15", "00000001000000000000000C.partial");
    check_segment(
        &WalFileName::parse("00000001000000000000000C.partial").unwrap(),
        &partial,
        sysid(&partial),
        SEG,
        15,
    )
    .unwrap();
}

#[test]
fn damaged_records_end_the_walk() {
    let name = WalFileName::parse("000000010000000000000007").unwrap();
    let good = data("pg15", "000000010000000000000007");
    // One bit of the restore point's name: its CRC fails, it is not reported, the walk is incomplete.
    let mut bad = good.clone();
    bad[0x1E730 + 24 + 2 + 8] ^= 0x01;
    let s = summarize_segment(&name, &bad, SEG, 15);
    assert!(
        !s.complete && s.stopped.as_deref().unwrap_or("").contains("CRC"),
        "{s:?}"
    );
    assert!(s.restore_points.is_empty());
    assert!(s.first_commit.is_some(), "what was read before the damage is kept");
    // A wrong major version's magic: nothing read.
    let s = summarize_segment(&name, &good, SEG, 16);
    assert!(!s.complete && s.records == 0);
    // Truncated file: what was read is kept, no panic.
    for len in [0, 39, 40, 8191, 8192, 8200, 0x1E740, 0x1E800] {
        let s = summarize_segment(&name, &good[..len], SEG, 15);
        assert!(s.records <= 108);
    }
}

/// Time to summarize a real segment (16 MiB ones are too big to keep here):
/// `PGVAULT_WALSCAN_SEGMENT=/path/000000010000000000000003 cargo test --release -p pgvault-core
/// --lib wal::tests_real::summarize_speed -- --ignored --nocapture` (`PGVAULT_WALSCAN_MAJOR`,
/// default 15).
#[test]
#[ignore = "benchmark: needs PGVAULT_WALSCAN_SEGMENT, run with --release"]
fn summarize_speed() {
    let path = PathBuf::from(std::env::var("PGVAULT_WALSCAN_SEGMENT").expect("PGVAULT_WALSCAN_SEGMENT"));
    let major = std::env::var("PGVAULT_WALSCAN_MAJOR").map_or(15, |m| m.parse().unwrap());
    let data = std::fs::read(&path).unwrap();
    let name = WalFileName::parse(path.file_name().unwrap().to_str().unwrap()).unwrap();
    let first = summarize_segment(&name, &data, data.len() as u64, major);
    let runs = 20;
    let t = std::time::Instant::now();
    for _ in 0..runs {
        assert_eq!(summarize_segment(&name, &data, data.len() as u64, major), first);
    }
    let per = t.elapsed() / runs;
    println!(
        "{name}: {} bytes in {per:?} per segment; {} records, commits {:?}..{:?}, complete {}",
        data.len(),
        first.records,
        first.first_commit,
        first.last_commit,
        first.complete
    );
}
