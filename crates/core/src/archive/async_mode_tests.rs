//! Queue accounting, spool placement and the worker status of asynchronous push.

use super::*;

const SS: u64 = 16 << 20;

fn seg(n: u64) -> WalFileName {
    WalFileName::from_segment_number(1, n, SS)
}

/// A `pg_wal` with segment files of `len` bytes, the given ones marked ready.
fn pg_wal(root: &Path, files: &[(u64, u64, bool)]) -> PathBuf {
    let w = root.join("data").join("pg_wal");
    std::fs::create_dir_all(w.join("archive_status")).expect("mkdir");
    for &(n, len, ready) in files {
        std::fs::write(w.join(seg(n).to_string()), vec![0u8; len as usize]).expect("segment");
        let st = if ready { "ready" } else { "done" };
        std::fs::write(w.join("archive_status").join(format!("{}.{st}", seg(n))), b"").expect("status");
    }
    w
}

#[test]
fn the_queue_is_the_ready_segments_or_the_spool() {
    let t = tempfile::tempdir().expect("tempdir");
    let w = pg_wal(t.path(), &[(1, 100, false), (2, 1000, true), (3, 1000, true)]);
    std::fs::write(w.join("archive_status/00000002.history.ready"), b"").expect("history");
    let spool = AsyncSpool::resolve(&w, &ArchiveConfig::default()).expect("spool");
    assert_eq!(spool.dir(), w.join(".pgvault/push"));
    assert_eq!(ready_segments(&w), vec![seg(2), seg(3)], "history files are not queued");
    assert_eq!(spool.queue_bytes(&w, false), 2000, "only .ready segments count");
    assert_eq!(spool.queue_bytes(&w, true), 0);
    spool.enqueue(&seg(2), &w.join(seg(2).to_string())).expect("enqueue");
    assert_eq!(spool.queue_bytes(&w, true), 1000);
    assert_eq!(spool.queued(), vec![seg(2)]);
    spool.dequeue(&seg(2));
    assert_eq!(spool.queue_bytes(&w, true), 0);
}

#[test]
fn a_spool_elsewhere_in_the_data_directory_is_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let w = pg_wal(t.path(), &[]);
    let with = |p: PathBuf| ArchiveConfig {
        spool_path: Some(p),
        ..ArchiveConfig::default()
    };
    assert!(AsyncSpool::resolve(&w, &with(t.path().join("data/pgvault-spool"))).is_err());
    assert!(AsyncSpool::resolve(&w, &with(w.join("spool"))).is_ok());
    assert!(AsyncSpool::resolve(&w, &with(t.path().join("elsewhere"))).is_ok());
}

#[test]
fn one_worker_per_spool_and_its_errors_reach_the_right_calls() {
    let t = tempfile::tempdir().expect("tempdir");
    let spool = AsyncSpool::at(t.path());
    assert!(!spool.worker_running());
    let lock = WorkerLock::try_take(&spool).expect("first");
    assert!(WorkerLock::try_take(&spool).is_none(), "a second worker is refused");
    assert!(spool.worker_running());
    assert_eq!(spool.worker_pid(), Some(std::process::id()));
    drop(lock);
    assert!(!spool.worker_running());

    let now = Utc::now();
    let s = WorkerStatus {
        at: now,
        error: Some("store down".into()),
        failed: vec![seg(5)],
    };
    spool.set_status(&s).expect("status");
    let s = spool.status().expect("read back");
    assert_eq!(s.error_for(&seg(5), now), Some("store down"));
    assert_eq!(s.error_for(&seg(6), now), None, "another segment's error");
    assert_eq!(
        s.error_for(&seg(5), now + chrono::Duration::seconds(1)),
        None,
        "older than the call"
    );
    let global = WorkerStatus {
        failed: Vec::new(),
        ..s
    };
    assert_eq!(global.error_for(&seg(6), now), Some("store down"));
}
