//! A standby that follows the archive rides out a store outage (PostgreSQL 15, the S3 emulator,
//! [`FaultProxy`] between the standby's `restore_command` and the store).
//!
//! The primary archives straight into the store. A standby is restored from its backup, with
//! `standby.signal` written by hand (the `restore --type standby` flag comes later) and a
//! configuration whose repository is reached through the proxy. While the proxy is down, the
//! standby's `pgvault-archive fetch` retries and then reports the next segment as not yet
//! available (exit 1) instead of stopping recovery (126): the server stays up and its log shows
//! the retries. Once the store is back, the standby catches up: rows written on the primary during
//! and after the outage become visible on it. The standby follows `recovery_target_timeline =
//! 'current'`: with `latest`, its periodic probe for a new timeline's `.history` file would stop
//! recovery during the outage (history files are never reported missing on a store failure).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgvault_tests::faultproxy::FaultPlan;
use pgvault_tests::proxied::{ProxiedS3, Timeouts};
use pgvault_tests::{
    archiving_cluster, install_under_test, run_workspace_bin, write_postgres_file, ClusterOptions, ObjStore, PgCluster,
    StoreKind, Vault,
};

async fn count(c: &PgCluster) -> Result<i64> {
    c.query_scalar("SELECT count(*) FROM t").await
}

/// Waits until the standby has `want` rows.
async fn wait_for_rows(standby: &PgCluster, want: i64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let have = count(standby).await.unwrap_or(-1);
        if have == want {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "the standby has {have} rows after {timeout:?}, the primary {want}; log:\n{}",
                standby.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_standby_rides_out_a_store_outage() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    if !StoreKind::S3PrivateCa.available() {
        return;
    }
    standby_inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn standby_inner(install: pgvault_tests::PgInstall) -> Result<()> {
    let store = ObjStore::start(StoreKind::S3PrivateCa).await?;
    let mut vault = Vault::new()?;
    let proxied = ProxiedS3::start(&store, &vault, FaultPlan::none()).await?;
    let (prefix, proxy) = (&proxied.prefix, &proxied.proxy);

    // The primary archives directly into the store.
    vault.repository_toml = Some(store.repository_toml(prefix));
    let primary = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    primary
        .execute("CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL)")
        .await?;
    primary
        .execute("INSERT INTO t (phase) SELECT 'base' FROM generate_series(1, 1000)")
        .await?;
    vault.backup(&[])?;

    // The standby reads the archive through the proxy.
    let standby_config = vault.dir.join("standby.toml");
    vault.repository_toml = Some(proxied.toml(Timeouts {
        request_secs: 5,
        retry_max: 1,
        retry_secs: 5,
    }));
    vault.write_config_to(&standby_config, &primary, &vault.passphrase, "")?;
    let dir = vault.restore_path("standby");
    let args = [
        "--config",
        &standby_config.display().to_string(),
        "restore",
        "--pgdata",
        &dir.display().to_string(),
    ]
    .map(String::from);
    run_workspace_bin("pgvault", args, &[], Duration::from_secs(300))?.check()?;
    let auto = dir.join("postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&auto).with_context(|| auto.display().to_string())?;
    // `current`, not the default `latest`: with `latest` a standby that runs out of WAL probes
    // the archive for the next timeline's `.history` file on every retry cycle, and a history file
    // the store cannot serve stops recovery (126) by design (at promotion, a false "missing"
    // would reuse a timeline id). See the module documentation of pgvault-archive.
    conf.push_str("archive_mode = off\nwal_retrieve_retry_interval = '1s'\nrecovery_target_timeline = 'current'\n");
    write_postgres_file(&auto, conf, 0o600)?;
    write_postgres_file(&dir.join("standby.signal"), "", 0o600)?;
    let mut standby = PgCluster::from_data_dir(&install, &dir, None)?;
    standby.start()?;
    assert!(standby.is_in_recovery().await?, "a standby stays in recovery");
    wait_for_rows(&standby, count(&primary).await?, Duration::from_secs(120)).await?;

    // The store goes down (for the standby); the primary keeps writing and archiving.
    proxy.set_down(true);
    primary
        .execute("INSERT INTO t (phase) SELECT 'during' FROM generate_series(1, 500)")
        .await?;
    let seg = primary.switch_wal().await?;
    primary.wait_for_archived(&seg, Duration::from_secs(120)).await?;
    wait_for_log(&standby, "not yet available", Duration::from_secs(120))?;
    let log = std::fs::read_to_string(standby.log_path())?;
    assert!(
        log.contains("retrying in"),
        "the fetch retried inside the command:\n{log}"
    );
    assert!(
        !log.contains("recovery is stopped"),
        "an outage must not stop the standby:\n{log}"
    );
    assert!(
        standby.is_running(),
        "the standby keeps running through the outage:\n{log}"
    );
    assert!(standby.is_in_recovery().await?, "and stays a standby");

    // Back up: the standby catches up, including rows written after the outage.
    proxy.set_down(false);
    primary
        .execute("INSERT INTO t (phase) SELECT 'after' FROM generate_series(1, 250)")
        .await?;
    let seg = primary.switch_wal().await?;
    primary.wait_for_archived(&seg, Duration::from_secs(120)).await?;
    let want = count(&primary).await?;
    assert_eq!(want, 1750);
    wait_for_rows(&standby, want, Duration::from_secs(180)).await?;
    let after: i64 = standby
        .query_scalar("SELECT count(*) FROM t WHERE phase = 'after'")
        .await?;
    assert_eq!(after, 250, "rows written after the outage reached the standby");
    drop(standby);
    drop(primary);
    Ok(())
}

/// Waits until the server log contains `needle`.
fn wait_for_log(c: &PgCluster, needle: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(c.log_path()).unwrap_or_default();
        if log.contains(needle) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("no '{needle}' in the log after {timeout:?}:\n{}", tail(c.log_path()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn tail(path: &Path) -> String {
    pgvault_tests::cluster::tail_file(path, 40)
}
