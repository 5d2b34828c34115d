use super::*;
use crate::lsn::Lsn;

const SEG: u64 = 16 * 1024 * 1024;

fn seg(s: &str) -> WalFileName {
    WalFileName::parse(s).expect("a valid name")
}

fn spool() -> (tempfile::TempDir, Spool) {
    let t = tempfile::tempdir().expect("tempdir");
    let s = Spool::new(&t.path().join("pg_wal"));
    (t, s)
}

#[test]
fn serves_exactly_what_was_put() {
    let (_t, s) = spool();
    let name = seg("000000010000000000000009");
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(s.get(&name), Ok(None));
    s.put(&name, &data).expect("put");
    assert_eq!(s.get(&name), Ok(Some(data.clone())));
    s.put(&name, b"").expect("put empty");
    assert_eq!(s.get(&name), Ok(Some(Vec::new())));
}

#[test]
fn every_flipped_byte_and_every_truncation_is_refused_and_removed() {
    let (_t, s) = spool();
    let name = seg("00000001000000000000000A");
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 13) as u8).collect();
    s.put(&name, &data).expect("put");
    let good = std::fs::read(s.path(&name)).expect("read");
    for i in (0..good.len()).step_by(37).chain([good.len() - 1]) {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        std::fs::write(s.path(&name), &bad).expect("write");
        assert!(s.get(&name).is_err(), "flipped byte {i} must not be served");
        assert!(!s.contains(&name), "the bad entry is removed");
    }
    for cut in [0, 10, good.len() / 2, good.len() - 1] {
        std::fs::write(s.path(&name), &good[..cut]).expect("write");
        assert!(s.get(&name).is_err(), "truncated at {cut}");
    }
    std::fs::write(s.path(&name), [good.as_slice(), b"x"].concat()).expect("write");
    assert!(s.get(&name).is_err(), "longer");
    let mut body = good.clone();
    body[0] ^= 1;
    std::fs::write(s.path(&name), &body).expect("write");
    assert_eq!(s.get(&name), Err(Rejected::BadContent), "a flipped body byte");
}

#[test]
fn take_moves_a_checked_entry_and_refuses_a_bad_one() {
    let (t, s) = spool();
    let name = seg("00000001000000000000000D");
    let dest = t.path().join("pg_wal/RECOVERYXLOG");
    assert!(matches!(s.take_into(&name, &dest), Ok(None)), "no entry");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    s.put(&name, &data).expect("put");
    std::fs::write(&dest, b"an older file").expect("write");
    let head = s.take_into(&name, &dest).expect("taken").expect("served");
    assert_eq!(head, data[..512]);
    assert!(std::fs::read(&dest).expect("read") == data, "exactly the body");
    assert!(!s.contains(&name), "moved, not copied");
    s.put(&name, &data).expect("put");
    let mut raw = std::fs::read(s.path(&name)).expect("read");
    raw[1_000_000] ^= 0x10;
    std::fs::write(s.path(&name), &raw).expect("write");
    std::fs::remove_file(&dest).expect("rm");
    assert!(matches!(
        s.take_into(&name, &dest),
        Err(TakeError::Rejected(Rejected::BadContent))
    ));
    assert!(
        !dest.exists() && !s.contains(&name),
        "nothing served, the bad entry removed"
    );
    let state = s.dir().parent().expect("state dir");
    let left: Vec<_> = std::fs::read_dir(state)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("prefetch")], "no claimed file left");
}

#[test]
fn the_cursor_and_the_stop_request_live_beside_the_spool_and_go_with_it() {
    let (_t, s) = spool();
    assert_eq!(s.cursor(), None);
    s.set_cursor(&seg("000000010000000000000042"));
    assert_eq!(s.cursor(), Some(seg("000000010000000000000042")));
    assert!(!s.stop_requested());
    s.request_stop();
    assert!(s.stop_requested());
    s.put(&seg("000000010000000000000043"), b"x").expect("put");
    assert!(s.remove_all().expect("rm"));
    assert_eq!((s.cursor(), s.stop_requested()), (None, false));
}

#[test]
fn an_entry_is_served_only_under_its_own_name() {
    let (_t, s) = spool();
    let (a, b) = (seg("00000001000000000000000B"), seg("00000001000000000000000C"));
    s.put(&a, b"segment b's neighbour").expect("put");
    std::fs::rename(s.path(&a), s.path(&b)).expect("rename");
    assert_eq!(s.get(&b), Err(Rejected::BadHeader));
}

#[test]
fn retain_bounds_the_spool_and_remove_all_clears_it() {
    let (_t, s) = spool();
    let names: Vec<WalFileName> = (1..=5).map(|i| WalFileName::from_segment_number(1, i, SEG)).collect();
    for n in &names {
        s.put(n, b"x").expect("put");
    }
    let hist = seg("00000002.history");
    s.put(&hist, b"1\t0/3000000\tno reason\n").expect("put");
    std::fs::write(s.dir().join("leftover.pgvault-1.tmp"), b"").expect("write");
    s.retain(&names[3..]);
    let left: Vec<bool> = names.iter().map(|n| s.contains(n)).collect();
    assert_eq!(left, [false, false, false, true, true]);
    assert!(s.contains(&hist), "history files stay");
    assert_eq!(std::fs::read_dir(s.dir()).expect("ls").count(), 3);
    assert!(s.remove_all().expect("rm"));
    assert!(!s.dir().exists());
    assert!(!s.remove_all().expect("rm again"));
}

fn entry(parent: u32, lsn: u64) -> HistoryEntry {
    HistoryEntry {
        parent,
        switch_lsn: Lsn(lsn),
        reason: String::new(),
    }
}

#[test]
fn the_timeline_of_a_segment_follows_the_switch_points() {
    // Timeline 1 up to 0/5800000 (segment 5), 2 up to 0/9000000 (segment 9), then 3.
    let h = [entry(1, 0x580_0000), entry(2, 0x900_0000)];
    let tl: Vec<u32> = (3..=11).map(|n| timeline_for_segment(n, 3, &h, SEG)).collect();
    assert_eq!(tl, [1, 1, 2, 2, 2, 2, 3, 3, 3]);
    assert_eq!(timeline_for_segment(7, 1, &[], SEG), 1);
}

#[test]
fn prefetch_window_crosses_to_the_target_timeline() {
    let (_t, s) = spool();
    let current = seg("000000010000000000000004");
    let plain = segments_after(&current, 3, None, SEG);
    assert_eq!(
        plain.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        [
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000007"
        ]
    );
    s.put(&seg("00000002.history"), b"1\t0/5800000\tbefore transaction 1\n")
        .expect("put");
    let target = s.target_history(1).expect("timeline 2 descends from 1");
    assert_eq!(target.0, 2);
    let next = segments_after(&current, 3, Some(&target), SEG);
    assert_eq!(
        next.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        [
            "000000020000000000000005",
            "000000020000000000000006",
            "000000020000000000000007"
        ]
    );
    assert!(s.target_history(3).is_none(), "nothing known above timeline 3");
}
