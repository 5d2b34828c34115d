use super::*;

fn seg(s: &str) -> WalFileName {
    WalFileName::parse(s).expect("a valid name")
}

fn pg_wal() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let w = t.path().join("pg_wal");
    std::fs::create_dir_all(w.join("archive_status")).expect("mkdir");
    (t, w)
}

#[test]
fn a_marker_vouches_only_for_the_same_bytes_in_the_same_repository() {
    let (_t, w) = pg_wal();
    let name = seg("000000010000000000000003");
    let file = w.join(name.to_string());
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let markers = PushedMarkers::new(&w);
    let record = || {
        markers
            .record(&name, &PushedMarker::of(&data, "file:///repo"))
            .expect("record")
    };

    record();
    assert!(markers.vouches(&name, &file, "file:///repo"));
    record();
    assert!(!markers.vouches(&name, &file, "file:///other"), "another repository");
    assert!(!markers.exists(&name), "a marker that does not match is removed");

    record();
    let mut changed = data.clone();
    changed[5000] ^= 1;
    std::fs::write(&file, &changed).expect("write");
    assert!(!markers.vouches(&name, &file, "file:///repo"), "one flipped byte");

    record();
    std::fs::write(&file, &data[..data.len() - 1]).expect("write");
    assert!(!markers.vouches(&name, &file, "file:///repo"), "shorter file");

    record();
    std::fs::remove_file(&file).expect("rm");
    assert!(!markers.vouches(&name, &file, "file:///repo"), "no file");

    std::fs::write(&file, &data).expect("write");
    assert!(!markers.vouches(&name, &file, "file:///repo"), "no marker");
}

#[test]
fn torn_or_foreign_markers_are_never_trusted() {
    let (_t, w) = pg_wal();
    let name = seg("000000010000000000000004");
    let file = w.join(name.to_string());
    std::fs::write(&file, b"abc").expect("write");
    let markers = PushedMarkers::new(&w);
    let good = PushedMarker::of(b"abc", "r").render();
    assert!(PushedMarker::parse(&good).is_some());
    for cut in 0..good.len() {
        assert!(PushedMarker::parse(&good[..cut]).is_none(), "cut at {cut}");
        std::fs::create_dir_all(markers.dir()).expect("mkdir");
        std::fs::write(markers.dir().join(name.to_string()), &good[..cut]).expect("write");
        assert!(!markers.vouches(&name, &file, "r"), "torn marker cut at {cut}");
    }
    assert!(PushedMarker::parse(&good.replace("blake3 ", "blake3 00")).is_none());
    assert!(PushedMarker::parse(&good.replace("pgvault-pushed 2", "pgvault-pushed 3")).is_none());
    assert!(
        PushedMarker::parse(
            &good
                .replace("pgvault-pushed 2", "pgvault-pushed 1")
                .replace("blake3 ", "sha256 ")
        )
        .is_none(),
        "a version 1 marker is ignored (the segment is pushed normally)"
    );
}

#[test]
fn ready_segments_after_the_requested_one_in_wal_order() {
    let (_t, w) = pg_wal();
    let status = w.join("archive_status");
    for n in [
        "000000010000000000000002.ready",
        "000000010000000000000005.ready",
        "000000010000000000000003.ready",
        "000000010000000000000004.done",
        "000000010000000100000000.ready",
        "00000002.history.ready",
        "000000010000000000000006.partial.ready",
        "junk.ready",
    ] {
        std::fs::write(status.join(n), b"").expect("write");
    }
    let after = seg("000000010000000000000002");
    let names: Vec<String> = ready_after(&w, &after, 10).iter().map(|n| n.to_string()).collect();
    assert_eq!(
        names,
        [
            "000000010000000000000003",
            "000000010000000000000005",
            "000000010000000100000000"
        ]
    );
    assert_eq!(ready_after(&w, &after, 1).len(), 1);
    assert!(ready_after(&w, &after, 0).is_empty());
}

#[test]
fn stale_markers_go() {
    let (_t, w) = pg_wal();
    let markers = PushedMarkers::new(&w);
    let (ready, done) = (seg("000000010000000000000007"), seg("000000010000000000000006"));
    std::fs::write(w.join("archive_status").join(format!("{ready}.ready")), b"").expect("write");
    std::fs::write(w.join("archive_status").join(format!("{done}.done")), b"").expect("write");
    let m = PushedMarker::of(b"x", "r");
    markers.record(&ready, &m).expect("record");
    markers.record(&done, &m).expect("record");
    std::fs::write(markers.dir().join("x.tmp"), b"").expect("write");
    assert_eq!(markers.remove_stale(&w), 2);
    assert!(markers.exists(&ready) && !markers.exists(&done));
}

#[test]
fn only_pg_wal_holds_state() {
    assert_eq!(
        pg_wal_of(Path::new("pg_wal/000000010000000000000001")),
        Some(PathBuf::from("pg_wal"))
    );
    assert_eq!(
        pg_wal_of(Path::new("/d/pg_wal/000000010000000000000001")),
        Some(PathBuf::from("/d/pg_wal"))
    );
    assert_eq!(pg_wal_of(Path::new("/tmp/000000010000000000000001")), None);
    assert_eq!(pg_wal_of(Path::new("000000010000000000000001")), None);
}
