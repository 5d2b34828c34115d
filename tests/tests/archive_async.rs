//! Asynchronous archiving (issue 11 item 2), with real WAL from a real cluster (PostgreSQL 15,
//! local repository: what is tested is pgvault's queueing, not the store):
//! - a burst archived through the background worker is stored whole and fetches back to the bytes
//!   PostgreSQL handed `archive_command`, and no marker is left behind (also on the S3 emulator,
//!   `async_burst_on_s3`);
//! - with the repository unreachable for a while, PostgreSQL keeps running and `.ready` files
//!   accumulate; once it is back everything is stored, nothing lost;
//! - with `archive_push_queue_max` reached, WAL is dropped only down to the limit, with an
//!   `ERROR` line naming each dropped segment, the local counter, a gap marker in the repository,
//!   and `pgvault verify` (exit 4) and `pgvault list` naming the hole;
//! - `pgvault restore` refuses to cross the hole and says why;
//! - with `push_ack = "spool"`, segments acknowledged from the spool all end up stored;
//! - the worker SIGKILLed at pseudo-random instants never leaves a segment marked stored that the
//!   repository does not hold with exactly those bytes.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pgvault_core::archive::async_mode::AsyncSpool;
use pgvault_tests::walsegs::{check_markers, fetch_bytes, files_in, make_segments};
use pgvault_tests::{
    archiving_cluster, install_under_test, postgres_command, wal_key, workspace_bin, ClusterOptions, ObjStore,
    PgCluster, PgInstall, StoreKind, Vault,
};

const ASYNC: &str =
    "[archive]\npush_mode = \"async\"\npush_batch = 8\npush_parallel = 4\narchive_async_wait = \"5s\"\n";

fn ready_count(c: &PgCluster) -> usize {
    files_in(&c.data_dir().join("pg_wal/archive_status"))
        .iter()
        .filter(|f| f.ends_with(".ready"))
        .count()
}

/// Makes the local repository unreachable (root ignores permissions, so it is moved away) and
/// brings it back.
struct StoreOutage {
    repo: PathBuf,
    away: PathBuf,
}

impl StoreOutage {
    fn begin(vault: &Vault) -> Result<StoreOutage> {
        let away = vault.repo.with_extension("away");
        std::fs::rename(&vault.repo, &away)?;
        Ok(StoreOutage {
            repo: vault.repo.clone(),
            away,
        })
    }
    fn end(self) -> Result<()> {
        Ok(std::fs::rename(&self.away, &self.repo)?)
    }
}

/// After three failures PostgreSQL's archiver sleeps up to a minute; a reload wakes it.
async fn wake_archiver(c: &PgCluster) -> Result<()> {
    c.execute("SELECT pg_reload_conf()").await
}

/// A burst of 8 segments archived through the background worker: all stored, each fetching back
/// to the bytes PostgreSQL handed `archive_command`, and no marker left behind.
async fn burst(cluster: &PgCluster, vault: &Vault, work: &std::path::Path, wait: Duration) -> Result<()> {
    let pushed = cluster.data_dir().join("pg_wal/.pgvault/pushed");
    let burst = make_segments(cluster, 8).await?;
    cluster.wait_for_archived(burst.last().context("burst")?, wait).await?;
    for s in &burst {
        ensure!(
            fetch_bytes(vault, s, &work.join("seg"))? == vault.archived_copy(s)?,
            "{s} fetches back to what PostgreSQL archived"
        );
    }
    ensure!(files_in(&pushed).is_empty(), "no marker left: {:?}", files_in(&pushed));
    Ok(())
}

/// The burst against the S3 emulator over TLS (the harness's SeaweedFS): the worker's batched,
/// parallel stores and the fetches go through the S3 store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_burst_on_s3() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    let Some(store) = ObjStore::for_test(StoreKind::S3PrivateCa).await else {
        return;
    };
    let run = async {
        let t0 = Instant::now();
        let mut vault = Vault::with_store(&store)?;
        vault.keep_archived_copies()?;
        let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
        vault.write_config(&cluster, ASYNC)?;
        let work = vault.dir.subdir("work")?;
        burst(&cluster, &vault, &work, Duration::from_secs(120)).await?;
        let log = std::fs::read_to_string(cluster.log_path())?;
        ensure!(
            !log.contains("the archive worker could not store WAL"),
            "no store error on the way: {}",
            cluster.log_tail()
        );
        eprintln!("burst stored on S3 and fetched back at {:?}", t0.elapsed());
        Ok::<(), anyhow::Error>(())
    };
    run.await
        .unwrap_or_else(|e| panic!("{e:#}\nstore log tail:\n{}", store.log_tail()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_push_survives_an_outage_and_drops_only_past_the_queue_limit() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    outage(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn outage(install: PgInstall) -> Result<()> {
    let t0 = Instant::now();
    let mut vault = Vault::new()?;
    vault.keep_archived_copies()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    vault.write_config(&cluster, ASYNC)?;
    vault.backup(&[])?;
    let work = vault.dir.subdir("work")?;

    // 1. A burst through the worker, stored whole.
    burst(&cluster, &vault, &work, Duration::from_secs(60)).await?;
    eprintln!("burst stored at {:?}", t0.elapsed());

    // 2. The store down for a while: PostgreSQL keeps running, .ready accumulates, and nothing
    //    is lost once the store is back.
    let down = StoreOutage::begin(&vault)?;
    let during = make_segments(&cluster, 4).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        ready_count(&cluster) >= 4,
        "ready segments accumulate: {}",
        ready_count(&cluster)
    );
    cluster.execute("SELECT 1").await.context("PostgreSQL keeps running")?;
    down.end()?;
    wake_archiver(&cluster).await?;
    cluster
        .wait_for_archived(during.last().context("during")?, Duration::from_secs(90))
        .await?;
    for s in &during {
        ensure!(
            fetch_bytes(&vault, s, &work.join("seg"))? == vault.archived_copy(s)?,
            "{s}"
        );
    }
    let log = std::fs::read_to_string(cluster.log_path())?;
    ensure!(
        log.contains("the archive worker could not store WAL"),
        "the outage is logged"
    );
    ensure!(!log.contains("DROPPED"), "nothing dropped without a queue limit");
    eprintln!("outage survived at {:?}", t0.elapsed());

    // 3. The queue limit: 2 segments' worth. With the store down, the oldest ready segments
    //    are dropped until what waits is within the limit; the rest is stored after.
    vault.write_config(&cluster, &format!("{ASYNC}archive_push_queue_max = \"32MB\"\n"))?;
    let down = StoreOutage::begin(&vault)?;
    let over = make_segments(&cluster, 5).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready_count(&cluster) > 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(cluster.log_path())?;
    let dropped: Vec<&String> = over
        .iter()
        .filter(|s| log.contains(&format!("WAL segment {s} DROPPED")))
        .collect();
    ensure!(
        dropped == over[..3].iter().collect::<Vec<_>>(),
        "exactly the three oldest dropped, down to the limit: {dropped:?}\n{}",
        cluster.log_tail()
    );
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(
        cluster.data_dir().join("pg_wal/.pgvault/push/dropped.json"),
    )?)?;
    ensure!(stats["count"] == 3, "the local counter: {stats}");
    ensure!(
        stats["first"] == over[0].as_str() && stats["last"] == over[2].as_str(),
        "{stats}"
    );
    down.end()?;
    wake_archiver(&cluster).await?;
    cluster
        .wait_for_archived(over.last().context("over")?, Duration::from_secs(90))
        .await?;
    // The gap marker reaches the repository once it is back.
    let gap_key = format!("gaps/00000001/{}-{}", over[0], over[2]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !vault.repo.join(&gap_key).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(vault.repo.join(&gap_key).exists(), "gap marker {gap_key} stored");
    for s in &over[..3] {
        ensure!(!vault.repo.join(wal_key(s)?).exists(), "{s} was dropped, not stored");
    }
    for s in &over[3..] {
        ensure!(
            fetch_bytes(&vault, s, &work.join("seg"))? == vault.archived_copy(s)?,
            "{s}"
        );
    }
    let verify = vault.pgvault(["verify"])?;
    ensure!(verify.code() == Some(4), "verify finds the hole: {verify}");
    ensure!(
        verify.stdout.contains(&over[0]) && verify.stdout.contains("dropped by archive_push_queue_max at"),
        "verify names the hole and why: {verify}"
    );
    let list = vault.pgvault(["list"])?;
    ensure!(list.stdout.contains(&over[0]), "list names the hole: {list}");
    let restore = vault.pgvault([
        "restore",
        "--dry-run",
        "--pgdata",
        &vault.restore_path("across-the-gap").display().to_string(),
    ])?;
    ensure!(
        !restore.success() && restore.stderr.contains("dropped by archive_push_queue_max at"),
        "restore refuses to cross the hole and says why: {restore}"
    );
    eprintln!("queue limit checked at {:?}", t0.elapsed());

    // 4. push_ack = "spool": acknowledged once spooled, stored by the worker from the spool.
    vault.write_config(&cluster, &format!("{ASYNC}push_ack = \"spool\"\n"))?;
    let spooled = make_segments(&cluster, 4).await?;
    cluster
        .wait_for_archived(spooled.last().context("spooled")?, Duration::from_secs(60))
        .await?;
    let queue = cluster.data_dir().join("pg_wal/.pgvault/push/queue");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !files_in(&queue).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        files_in(&queue).is_empty(),
        "the worker emptied the spool: {:?}",
        files_in(&queue)
    );
    for s in &spooled {
        ensure!(
            fetch_bytes(&vault, s, &work.join("seg"))? == vault.archived_copy(s)?,
            "{s}"
        );
    }
    eprintln!("spool acknowledgement checked at {:?}", t0.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_never_leaves_a_false_marker() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    killed(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn killed(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    vault.write_config(&cluster, ASYNC)?;
    cluster.alter_system("archive_command", "/bin/false").await?;
    let segs = make_segments(&cluster, 8).await?;
    let pg_wal = cluster.data_dir().join("pg_wal");
    let markers = pg_wal.join(".pgvault/pushed");
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
    let spool = AsyncSpool::at(&pg_wal.join(".pgvault/push"));
    // Kills the worker (SIGKILL) and any the killed foreground call had just started, until
    // none has run for a while, so that nothing writes while the markers are checked.
    let kill_worker = || async {
        let mut quiet = 0;
        while quiet < 10 {
            match spool.worker_pid() {
                Some(pid) => {
                    quiet = 0;
                    let pid = nix::unistd::Pid::from_raw(pid as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
                None => quiet += 1,
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    let reset = || -> Result<()> {
        let _ = std::fs::remove_dir_all(&markers);
        for s in &segs {
            let _ = std::fs::remove_file(vault.repo.join(wal_key(s)?));
        }
        Ok(())
    };
    let started = Instant::now();
    let status = push().status()?;
    let whole = started.elapsed();
    ensure!(status.success(), "an uninterrupted async push succeeds");
    kill_worker().await;
    reset()?;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut checked = 0;
    for round in 0..8 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // Over twice the time of a whole call: the worker goes on storing the batch after it.
        let delay = whole.mul_f64(((seed >> 33) % 2000) as f64 / 1000.0);
        let mut child = push().spawn()?;
        tokio::time::sleep(delay).await;
        // The whole foreground call (runuser and pgvault-archive), then its worker (a process
        // group of its own).
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        child.wait()?;
        kill_worker().await;
        let what = format!("round {round} (killed after {delay:?})");
        checked += check_markers(&vault, &markers, &pg_wal, &work.join("seg"), &what)?;
        reset()?;
    }
    eprintln!("an async push took {whole:?}; checked {checked} markers left by killed workers");
    ensure!(checked > 0, "some kills landed after markers were written");
    Ok(())
}
