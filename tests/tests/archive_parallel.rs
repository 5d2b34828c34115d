//! Batch push and prefetching fetch (issue 11), with real WAL from a real cluster (PostgreSQL 15,
//! local repository):
//! - a backlog of ready segments drained through `archive_command` with batching arrives whole:
//!   every segment fetches back to the bytes PostgreSQL handed `archive_command`, and no marker
//!   is left behind;
//! - a segment changed after a batch stored it is refused as before (the marker is not trusted);
//! - `pgvault-archive push` SIGKILLed at pseudo-random instants inside a batch never leaves a
//!   marker for a segment the repository does not hold with exactly those bytes;
//! - a fetch prefetches into `pg_wal/.pgvault/prefetch`, a corrupted prefetched file is never
//!   served (re-downloaded, or the call fails when the repository cannot be reached), and a
//!   restore that replays many segments reaches the right data and leaves no spool after
//!   promotion;
//! - the same batch push and prefetch round trip against the S3 emulator.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgvault_tests::walsegs::{check_markers, fetch_bytes, files_in, make_segments};
use pgvault_tests::{
    archiving_cluster, install_under_test, postgres_command, wal_key, workspace_bin, write_postgres_file,
    ClusterOptions, ObjStore, PgCluster, PgInstall, StoreKind, Vault,
};

const BATCH: &str = "[archive]\npush_batch = 8\npush_parallel = 4\nget_prefetch = 4\nget_parallel = 2\n";

async fn pause_archiving(c: &PgCluster) -> Result<()> {
    c.alter_system("archive_command", "/bin/false").await
}

fn pushed_dir(c: &PgCluster) -> PathBuf {
    c.data_dir().join("pg_wal/.pgvault/pushed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_push_stores_a_burst_whole_and_refuses_changed_segments() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    burst(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn burst(install: PgInstall) -> Result<()> {
    let mut vault = Vault::new()?;
    vault.keep_archived_copies()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    vault.write_config(&cluster, BATCH)?;
    pause_archiving(&cluster).await?;
    let segs = make_segments(&cluster, 12).await?;
    let started = Instant::now();
    cluster
        .alter_system("archive_command", &vault.archive_command())
        .await?;
    let last = segs.last().context("segments")?;
    cluster.wait_for_archived(last, Duration::from_secs(120)).await?;
    eprintln!("drained {} segments in {:?}", segs.len(), started.elapsed());
    let log = std::fs::read_to_string(cluster.log_path())?;
    assert!(
        log.contains("ahead of PostgreSQL's requests"),
        "the backlog was pushed in batches:\n{}",
        cluster.log_tail()
    );
    let work = vault.dir.subdir("work")?;
    for s in &segs {
        let got = fetch_bytes(&vault, s, &work.join("seg"))?;
        assert!(
            got == vault.archived_copy(s)?,
            "{s} fetches back to what PostgreSQL archived"
        );
    }
    assert_eq!(files_in(&pushed_dir(&cluster)), Vec::<String>::new(), "no marker left");

    // A batch stores the segments after the one asked for; one of them then changes.
    pause_archiving(&cluster).await?;
    let segs = make_segments(&cluster, 3).await?;
    let pg_wal = cluster.data_dir().join("pg_wal");
    let path = |s: &str| pg_wal.join(s).display().to_string();
    vault.archive(["push", &path(&segs[0])])?.check()?;
    let mut marked = files_in(&pushed_dir(&cluster));
    marked.sort();
    assert_eq!(marked, segs[1..], "the next ready segments were stored and marked");
    let original = std::fs::read(path(&segs[2]))?;
    let mut changed = original.clone();
    changed[original.len() / 2] ^= 0x01;
    write_postgres_file(Path::new(&path(&segs[2])), &changed, 0o600)?;
    let out = vault.archive(["push", &path(&segs[2])])?;
    assert_eq!(out.code(), Some(1), "a changed segment is refused: {out}");
    assert!(out.stderr.contains("different content"), "{out}");
    write_postgres_file(Path::new(&path(&segs[2])), &original, 0o600)?;
    let out = vault.archive(["push", &path(&segs[2])])?.check()?;
    assert!(out.stderr.contains("identical content"), "pushed normally again: {out}");
    // The untouched one is vouched for by its marker: quiet success, marker gone.
    let out = vault.archive(["push", &path(&segs[1])])?.check()?;
    assert!(out.stderr.trim().is_empty(), "{out}");
    assert!(files_in(&pushed_dir(&cluster)).is_empty());
    for s in &segs {
        assert!(fetch_bytes(&vault, s, &work.join("seg"))? == std::fs::read(path(s))?);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_batches_never_leave_a_false_marker() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    killed(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn killed(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    vault.write_config(&cluster, BATCH)?;
    pause_archiving(&cluster).await?;
    let segs = make_segments(&cluster, 9).await?;
    let pg_wal = cluster.data_dir().join("pg_wal");
    let markers = pushed_dir(&cluster);
    let work = vault.dir.subdir("work")?;
    let push = || {
        let mut cmd = postgres_command(workspace_bin("pgvault-archive"));
        cmd.args(["--config", &vault.config.display().to_string(), "push"])
            .arg(pg_wal.join(&segs[0]))
            .env("PGVAULT_FAILPOINT", "archive:push-delay-ms=40")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0);
        cmd
    };
    let reset = || -> Result<()> {
        let _ = std::fs::remove_dir_all(&markers);
        for s in &segs {
            let _ = std::fs::remove_file(vault.repo.join(wal_key(s)?));
        }
        Ok(())
    };
    // One whole run, to know how long a batch takes here.
    let started = Instant::now();
    let status = push().status()?;
    let whole = started.elapsed();
    assert!(status.success(), "an uninterrupted batch push succeeds");
    assert_eq!(
        files_in(&markers).len(),
        7,
        "push_batch = 8: seven segments marked ahead"
    );
    reset()?;
    // Fixed-seed pseudo-random kill instants (an LCG) spread over that time.
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut checked_markers = 0;
    for round in 0..10 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = whole.mul_f64(((seed >> 33) % 1000) as f64 / 1000.0);
        let mut child = push().spawn()?;
        tokio::time::sleep(delay).await;
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        child.wait()?;
        // Every marker left must be true: the object exists and holds the file's bytes.
        let what = format!("round {round} (killed after {delay:?})");
        checked_markers += check_markers(&vault, &markers, &pg_wal, &work.join("seg"), &what)?;
        // Start the next round from scratch: no markers, no stored segments.
        reset()?;
    }
    eprintln!("a whole batch took {whole:?}; checked {checked_markers} markers left by killed batches");
    assert!(checked_markers > 0, "some kills landed after markers were written");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_serves_only_checked_copies_and_promotion_removes_the_spool() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    prefetch(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn prefetch(install: PgInstall) -> Result<()> {
    let t0 = Instant::now();
    let mut vault = Vault::new()?;
    vault.keep_archived_copies()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    vault.write_config(&cluster, BATCH)?;
    cluster.execute("CREATE TABLE t (id int, v text)").await?;
    vault.backup(&[])?;
    let mut segs = Vec::new();
    for i in 0..16 {
        cluster
            .execute(&format!(
                "INSERT INTO t SELECT g, md5(g::text) FROM generate_series({0} * 1000 + 1, {0} * 1000 + 1000) g",
                i
            ))
            .await?;
        segs.push(cluster.switch_wal().await?);
    }
    cluster
        .wait_for_archived(segs.last().context("segments")?, Duration::from_secs(120))
        .await?;
    let want: String = cluster
        .query_scalar("SELECT md5(string_agg(v, ',' ORDER BY id)) FROM t")
        .await?;

    // By hand, into a scratch pg_wal: the call for one segment spools the next ones.
    let scratch = vault.dir.subdir("scratch")?.join("pg_wal");
    std::fs::create_dir_all(&scratch)?;
    pgvault_tests::chown_to_postgres(&scratch)?;
    let dest = scratch.join("RECOVERYXLOG");
    let fetch = |cfg: &Path, name: &str| {
        pgvault_tests::run_pgvault_archive(
            [
                "--config",
                &cfg.display().to_string(),
                "fetch",
                name,
                &dest.display().to_string(),
            ],
            None,
        )
    };
    fetch(&vault.config, &segs[0])?.check()?;
    let spool = scratch.join(".pgvault/prefetch");
    wait_for_idle_worker(&scratch)?;
    for s in &segs[1..5] {
        assert!(spool.join(s).is_file(), "{s} prefetched: {:?}", files_in(&spool));
    }
    // A flipped byte in a prefetched copy: refused, re-downloaded.
    flip_last_byte(&spool.join(&segs[1]))?;
    let out = fetch(&vault.config, &segs[1])?.check()?;
    assert!(out.stderr.contains("failed its check"), "{out}");
    assert!(std::fs::read(&dest)? == vault.archived_copy(&segs[1])?);
    wait_for_idle_worker(&scratch)?;
    // With the repository out of reach, a good copy is served and a bad one never is.
    let broken = vault.dir.join("broken.toml");
    let text = std::fs::read_to_string(&vault.config)?.replace(
        &format!("file://{}", vault.repo.display()),
        &format!("file://{}", vault.dir.join("no-such-repo").display()),
    );
    write_postgres_file(&broken, text, 0o600)?;
    fetch(&broken, &segs[2])?.check()?;
    assert!(
        std::fs::read(&dest)? == vault.archived_copy(&segs[2])?,
        "served from the spool"
    );
    flip_last_byte(&spool.join(&segs[3]))?;
    std::fs::remove_file(&dest)?;
    let out = fetch(&broken, &segs[3])?;
    assert!(!out.success(), "a corrupt copy is not served: {out}");
    assert!(!dest.exists(), "nothing written");

    eprintln!("{:?}: spool checks done", t0.elapsed());
    // A restore replays all of it (with prefetch) and promotion removes the spool.
    let mut restored = vault.restore(&install, "restored", &[], false)?;
    let auto = std::fs::read_to_string(restored.data_dir().join("postgresql.auto.conf"))?;
    assert!(
        auto.contains("spool-clean"),
        "restore writes recovery_end_command:\n{auto}"
    );
    eprintln!("{:?}: restored", t0.elapsed());
    restored.start()?;
    restored.wait_for_recovery_end(Duration::from_secs(180)).await?;
    eprintln!("{:?}: recovered", t0.elapsed());
    let got: String = restored
        .query_scalar("SELECT md5(string_agg(v, ',' ORDER BY id)) FROM t")
        .await?;
    assert_eq!(got, want, "the restore replayed every segment");
    let log = std::fs::read_to_string(restored.log_path())?;
    assert!(!log.contains("failed its check"), "{log}");
    let left = restored.data_dir().join("pg_wal/.pgvault/prefetch");
    if left.exists() {
        bail!("promotion left the spool behind: {:?}", files_in(&left));
    }
    Ok(())
}

fn median(v: &mut [u128]) -> u128 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Waits until no prefetch worker holds the spool's lock (the worker is a detached process).
fn wait_for_idle_worker(pg_wal: &Path) -> Result<()> {
    use nix::fcntl::{Flock, FlockArg};
    let lock = pg_wal.join(".pgvault/prefetch.lock");
    let start = Instant::now();
    loop {
        let Ok(f) = std::fs::File::open(&lock) else {
            return Ok(());
        };
        if Flock::lock(f, FlockArg::LockSharedNonblock).is_ok() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the prefetch worker still runs after a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn flip_last_byte(path: &Path) -> Result<()> {
    let mut b = std::fs::read(path).with_context(|| path.display().to_string())?;
    let last = b.len() - 1;
    b[last] ^= 0x01;
    write_postgres_file(path, &b, 0o600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_s3_batch_and_prefetch_round_trip() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    let Some(store) = ObjStore::for_test(StoreKind::S3PrivateCa).await else {
        return;
    };
    s3_round_trip(&install, &store)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nstore log tail:\n{}", store.log_tail()));
}

/// The same batch push and prefetch against the S3 emulator: a backlog drained in batches and
/// fetched back one call at a time through a scratch `pg_wal` with prefetch.
async fn s3_round_trip(install: &PgInstall, store: &ObjStore) -> Result<()> {
    let mut vault = Vault::with_store(store)?;
    vault.keep_archived_copies()?;
    let cluster = archiving_cluster(install, &vault, ClusterOptions::default()).await?;
    vault.write_config(&cluster, BATCH)?;
    pause_archiving(&cluster).await?;
    let segs = make_segments(&cluster, 10).await?;
    cluster
        .alter_system("archive_command", &vault.archive_command())
        .await?;
    cluster
        .wait_for_archived(segs.last().context("segments")?, Duration::from_secs(120))
        .await?;
    let log = std::fs::read_to_string(cluster.log_path())?;
    assert!(
        log.contains("ahead of PostgreSQL's requests"),
        "batched:\n{}",
        cluster.log_tail()
    );
    let scratch = vault.dir.subdir("scratch")?.join("pg_wal");
    std::fs::create_dir_all(&scratch)?;
    pgvault_tests::chown_to_postgres(&scratch)?;
    let dest = scratch.join("RECOVERYXLOG");
    for s in &segs {
        vault.archive(["fetch", s, &dest.display().to_string()])?.check()?;
        assert!(std::fs::read(&dest)? == vault.archived_copy(s)?, "{s} fetched intact");
    }
    wait_for_idle_worker(&scratch)?;
    Ok(())
}

/// Timing, not a check (run by hand: `cargo test -p pgvault-tests --test archive_parallel --
/// --ignored --nocapture timing`): N ready segments pushed one `archive_command` call at a time
/// as PostgreSQL's archiver does, without and with batching, then fetched one `restore_command`
/// call at a time into a scratch `pg_wal`, without and with prefetch. Local repository,
/// encrypted, zstd level 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing; run by hand"]
async fn timing_batch_push_and_prefetch() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    timing(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn timing(install: PgInstall) -> Result<()> {
    const N: usize = 32;
    let vault = Vault::new()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    pause_archiving(&cluster).await?;
    let segs = make_segments(&cluster, N).await?;
    let pg_wal = cluster.data_dir().join("pg_wal");
    let scratch = vault.dir.subdir("scratch")?.join("pg_wal");
    std::fs::create_dir_all(&scratch)?;
    pgvault_tests::chown_to_postgres(&scratch)?;
    let settings = [
        ("serial", "[archive]\npush_batch = 1\nget_prefetch = 0\n"),
        (
            "batch 16 x4 / prefetch 8 x4",
            "[archive]\npush_batch = 16\npush_parallel = 4\nget_prefetch = 8\nget_parallel = 4\n",
        ),
    ];
    // What a call costs before it does anything (process start under runuser, config parsing).
    let mut base = Vec::new();
    for _ in 0..8 {
        let t = Instant::now();
        vault.archive(["--version"])?.check()?;
        base.push(t.elapsed().as_millis());
    }
    eprintln!("process start (--version): median {} ms", median(&mut base));
    for round in 0..3 {
        for (label, extra) in settings {
            vault.write_config(&cluster, extra)?;
            let _ = std::fs::remove_dir_all(pushed_dir(&cluster));
            for s in &segs {
                let _ = std::fs::remove_file(vault.repo.join(wal_key(s)?));
            }
            let (mut push_calls, mut fetch_calls) = (Vec::new(), Vec::new());
            let started = Instant::now();
            for s in &segs {
                let t = Instant::now();
                vault
                    .archive(["push", &pg_wal.join(s).display().to_string()])?
                    .check()?;
                push_calls.push(t.elapsed().as_millis());
            }
            let push = started.elapsed();
            wait_for_idle_worker(&scratch)?;
            let _ = std::fs::remove_dir_all(scratch.join(".pgvault"));
            let dest = scratch.join("RECOVERYXLOG").display().to_string();
            let started = Instant::now();
            for s in &segs {
                let t = Instant::now();
                vault.archive(["fetch", s, &dest])?.check()?;
                fetch_calls.push(t.elapsed().as_millis());
            }
            let fetch = started.elapsed();
            eprintln!(
                "round {round} {label}: push {N} segments {push:.2?} ({:.1} seg/s, median call {} ms), fetch {fetch:.2?} ({:.1} seg/s, median call {} ms)",
                N as f64 / push.as_secs_f64(),
                median(&mut push_calls),
                N as f64 / fetch.as_secs_f64(),
                median(&mut fetch_calls),
            );
        }
    }
    Ok(())
}
