//! The storage layer under a misbehaving network, on PostgreSQL 15 and the S3 emulator, with
//! [`FaultProxy`] between pgvault and the server:
//!
//! - about a quarter of all requests fail (`500`, `503 SlowDown`, stalls longer than
//!   `request_timeout` so the client's timeout really fires, connections dropped mid-response):
//!   `init`, a `backup` and a burst of 20 WAL pushes through `archive_command` all still succeed,
//!   with zero archiver failures in `pg_stat_archiver`; then a restore (bundles, listings and WAL
//!   fetched through faults that the proxy counts for the restore alone, dropped responses
//!   included) has exactly the primary's contents (an md5 over every row), passes
//!   `pg_verifybackup` before it starts and `pg_amcheck` after;
//! - the store goes down for good in the middle of a backup (at its first bundle upload): the
//!   backup fails within the bound set by the small retry/timeout keys of `[repository]`, with an
//!   error naming the store, and `pgvault list` against the real server shows no partial backup;
//! - a store that answers `501 Not Implemented` to conditional writes (`If-None-Match`): the
//!   probe at `init` chooses check-then-write (`pgvault info` says so) and WAL pushes still work,
//!   with fetched bytes equal to what PostgreSQL archived.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use pgvault_tests::faultproxy::FaultPlan;
use pgvault_tests::proxied::{ProxiedS3, Timeouts};
use pgvault_tests::{
    archiving_cluster, install_under_test, run_workspace_bin, ClusterOptions, ObjStore, PgCluster, StoreKind, Vault,
};

/// The request timeout of the faulted phases, and a stall longer than it: the client's timeout
/// fires before the proxy would close the connection.
const REQUEST_TIMEOUT_SECS: u64 = 5;
const STALL: Duration = Duration::from_secs(8);

/// Row count and an md5 over every row of `t` in id order: equal only if the contents are.
async fn contents(c: &PgCluster) -> Result<String> {
    c.query_scalar("SELECT count(*)::text || ' rows, md5 ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t")
        .await
}

/// The restore's plan: faults of every kind on about a third of the requests, dropped responses
/// the most frequent, so that they reach the restore's few dozen requests for certain.
fn restore_plan() -> FaultPlan {
    FaultPlan {
        seed: 7,
        error_500: 0.06,
        slow_down_503: 0.06,
        stall: 0.03,
        drop_response: 0.15,
        ..FaultPlan::mixed(7, 0.0, STALL)
    }
}

fn pgvault_with(config: &Path, args: &[&str]) -> Result<pgvault_tests::CmdOutput> {
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    run_workspace_bin("pgvault", all, &[], Duration::from_secs(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_under_faults_and_down_for_good() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    if !StoreKind::S3PrivateCa.available() {
        return;
    }
    faults_inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_without_conditional_writes_falls_back_to_check_then_write() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    if !StoreKind::S3PrivateCa.available() {
        return;
    }
    no_conditional_inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn no_conditional_inner(install: pgvault_tests::PgInstall) -> Result<()> {
    let store = ObjStore::start(StoreKind::S3PrivateCa).await?;
    let mut vault = Vault::new()?;
    vault.keep_archived_copies()?;
    let plan = FaultPlan {
        reject_conditional: true,
        ..FaultPlan::none()
    };
    let s3 = ProxiedS3::start(&store, &vault, plan).await?;
    let proxy = &s3.proxy;
    vault.repository_toml = Some(s3.toml(Timeouts {
        request_secs: 30,
        retry_max: 2,
        retry_secs: 20,
    }));

    // `init` (inside archiving_cluster) probes the store: its conditional write gets 501.
    let primary = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    let init = proxy.stats();
    assert!(
        init.rejected_conditional >= 1,
        "the probe's conditional write reached the store and got 501: {init:?}"
    );
    let info = vault.pgvault(["info", "--json"])?.check()?;
    let info: serde_json::Value = serde_json::from_str(&info.stdout).context("info --json")?;
    assert_eq!(
        info["wal_push_mode"], "check-then-write",
        "the probe chose the fallback: {info}"
    );
    let text = vault.pgvault(["info"])?.check()?;
    assert!(text.stdout.contains("check-then-write"), "info shows the mode: {text}");

    // Pushes work, and never send a conditional write again.
    let mut segs = Vec::new();
    for _ in 0..3 {
        segs.push(primary.archive_fresh_segment().await?);
    }
    let failed: i64 = primary
        .query_scalar("SELECT failed_count FROM pg_stat_archiver")
        .await?;
    assert_eq!(failed, 0, "no archiver failure on a store without conditional writes");
    assert_eq!(
        proxy.stats().rejected_conditional,
        init.rejected_conditional,
        "pushes use check-then-write: {:?}",
        proxy.stats()
    );
    let work = vault.dir.subdir("work")?;
    for seg in &segs {
        let dest = work.join(seg);
        vault.archive(["fetch", seg, &dest.display().to_string()])?.check()?;
        assert!(
            std::fs::read(&dest)? == vault.archived_copy(seg)?,
            "{seg}: fetch returns the bytes PostgreSQL archived"
        );
    }
    Ok(())
}

async fn faults_inner(install: pgvault_tests::PgInstall) -> Result<()> {
    let store = ObjStore::start(StoreKind::S3PrivateCa).await?;
    let mut vault = Vault::new()?;
    // 25% of requests faulted; stalls longer than the request timeout (the client gives up and
    // retries).
    let s3 = ProxiedS3::start(&store, &vault, FaultPlan::mixed(20261123, 0.25, STALL)).await?;
    let (direct, prefix, proxy) = (&s3.direct, &s3.prefix, &s3.proxy);
    proxy.set_phase("backup");
    vault.repository_toml = Some(s3.toml(Timeouts {
        request_secs: REQUEST_TIMEOUT_SECS,
        retry_max: 10,
        retry_secs: 180,
    }));

    let primary = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    primary
        .execute("CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL)")
        .await?;
    primary
        .execute("INSERT INTO t (phase) SELECT 'base' FROM generate_series(1, 5000)")
        .await?;
    let id = vault.backup(&[])?;

    // A burst of WAL: 20 segments through archive_command and the faults.
    let mut last = String::new();
    for _ in 0..20 {
        primary
            .execute("INSERT INTO t (phase) SELECT 'burst' FROM generate_series(1, 50)")
            .await?;
        last = primary.switch_wal().await?;
    }
    primary.wait_for_archived(&last, Duration::from_secs(180)).await?;
    let failed: i64 = primary
        .query_scalar("SELECT failed_count FROM pg_stat_archiver")
        .await?;
    let stats = proxy.phase_stats("backup");
    eprintln!("fault proxy after backup and WAL burst: {stats:?}; archiver failures: {failed}");
    assert!(
        stats.faults() * 8 >= stats.requests && stats.requests >= 40,
        "the faults really happened: {stats:?}"
    );
    // Checked last (below), so that a failure here does not hide the restore's checks.
    let archiver_failures = failed;

    let list = vault.list()?;
    assert_eq!(list["backups"][0]["id"], id.as_str(), "{list}");
    assert!(
        list["wal"]["segments"].as_u64().unwrap_or(0) >= 20,
        "every segment is archived: {list}"
    );

    // Restore (bundles, catalogs, listings and WAL all read through every kind of fault,
    // including bodies cut off mid-response, which `Storage` resumes) to the end of the archive.
    let expected = contents(&primary).await?;
    proxy.set_plan(restore_plan());
    proxy.set_phase("restore");
    let mut c = vault.restore(&install, "restored", &[], false)?;
    if let Some(verify) = c.pg_verifybackup(c.data_dir(), None)? {
        assert!(
            verify.success(),
            "pg_verifybackup agrees with the restored files: {verify}"
        );
    }
    c.start()?;
    c.wait_for_recovery_end(Duration::from_secs(300)).await?;
    proxy.set_phase("after restore");
    proxy.set_plan(FaultPlan::none());
    let hit = proxy.phase_stats("restore");
    eprintln!("fault proxy during the restore: {hit:?}");
    assert!(
        hit.read_faults >= 3 && hit.drops >= 1,
        "faults, dropped responses included, hit the restore's reads: {hit:?}"
    );
    assert!(
        hit.stalls == 0 || hit.stalls_client_gave_up >= 1,
        "a stall made the client's request timeout fire: {hit:?}"
    );
    assert_eq!(
        contents(&c).await?,
        expected,
        "the restore has exactly the primary's contents"
    );
    c.pg_amcheck()?;
    drop(c);
    let all = proxy.stats();
    assert!(
        all.stalls >= 1 && all.stalls_client_gave_up >= 1,
        "stalls longer than request_timeout made the client give up: {all:?}"
    );

    // Down for good, from the first bundle upload of the next backup on. Small bounds.
    let down_config = vault.dir.join("down.toml");
    vault.repository_toml = Some(s3.toml(Timeouts {
        request_secs: 5,
        retry_max: 2,
        retry_secs: 10,
    }));
    vault.write_config_to(&down_config, &primary, &vault.passphrase, "")?;
    proxy.down_when_path_contains("/bundles/");
    let out = pgvault_with(&down_config, &["backup"])?;
    assert!(!out.success(), "a backup to a dead store must fail: {out}");
    assert!(proxy.is_down(), "the store went down mid-backup: {out}");
    assert!(
        out.elapsed < Duration::from_secs(90),
        "within the configured bound: {out}"
    );
    eprintln!(
        "backup against the dead store failed after {:.1}s: {}",
        out.elapsed.as_secs_f64(),
        out.stderr.trim()
    );
    let down_out = out;

    // The real server, directly: only the first backup exists.
    let direct_config = vault.dir.join("direct.toml");
    vault.repository_toml = Some(store.repository_toml(prefix));
    vault.write_config_to(&direct_config, &primary, &vault.passphrase, "")?;
    let out = pgvault_with(&direct_config, &["list", "--json"])?.check()?;
    let list: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let ids: Vec<&str> = list["backups"]
        .as_array()
        .context("backups")?
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "no partial backup is listed: {list}");
    // Last, so that every other check above has run: the person reading the error must learn
    // which store died.
    assert!(
        down_out.stderr.contains(&direct.url),
        "the error names the store ({}): {down_out}",
        direct.url
    );
    // Every push retries through the faults, including a conditional PUT whose request timed
    // out (a stall longer than request_timeout): PostgreSQL would retry a failed archive_command,
    // but each failure is an operator-visible alert and WAL piling up in pg_wal.
    assert_eq!(
        archiver_failures, 0,
        "pushes must retry through the faults: archive_command failed {archiver_failures} time(s) (see the server log: \
         a timed-out conditional PUT is not retried)"
    );
    drop(primary);
    Ok(())
}
