//! The storage layer under a misbehaving network, on PostgreSQL 15 and the S3 emulator, with
//! [`FaultProxy`] between pgvault and the server:
//!
//! - about a quarter of all requests fail (`500`, `503 SlowDown`, stalls, connections dropped
//!   mid-response): `init`, a `backup` and a burst of 20 WAL pushes through `archive_command` all
//!   still succeed (with no archiver failure), and a restore (bundles, listings and WAL fetched
//!   through the same faults) has the primary's rows;
//! - the store goes down for good in the middle of a backup (at its first bundle upload): the
//!   backup fails within the bound set by the small retry/timeout keys of `[repository]`, with an
//!   error naming the store, and `pgvault list` against the real server shows no partial backup.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use pgvault_core::config::RepositoryConfig;
use pgvault_tests::faultproxy::{FaultPlan, FaultProxy, Upstream};
use pgvault_tests::{archiving_cluster, install_under_test, run_workspace_bin, ClusterOptions, ObjStore, PgCluster, StoreKind, Vault};

/// `[repository]` body for the repository under `direct.url`, reached through `proxy`.
fn proxied_toml(direct: &RepositoryConfig, proxy: &FaultProxy, request_timeout: u64, retry_max: usize, retry_timeout: u64) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut t = format!("url = {}\nendpoint = {}\nallow_http = true\n", q(&direct.url), q(&proxy.endpoint()));
    for (k, v) in [("region", &direct.region), ("access_key_id", &direct.access_key_id), ("secret_access_key", &direct.secret_access_key)] {
        if let Some(v) = v {
            t.push_str(&format!("{k} = {}\n", q(v)));
        }
    }
    t.push_str(&format!(
        "request_timeout = {request_timeout}\nconnect_timeout = 2\nretry_max = {retry_max}\nretry_timeout = {retry_timeout}\n"
    ));
    t
}

async fn phases(c: &PgCluster) -> Result<String> {
    let client = c.client().await?;
    let rows = client.query("SELECT phase, count(*) FROM t GROUP BY phase ORDER BY phase", &[]).await?;
    Ok(rows.iter().map(|r| format!("{}:{}", r.get::<_, String>(0), r.get::<_, i64>(1))).collect::<Vec<_>>().join(" "))
}

fn pgvault_with(config: &Path, args: &[&str]) -> Result<pgvault_tests::CmdOutput> {
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    run_workspace_bin("pgvault", all, &[], Duration::from_secs(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_under_faults_and_down_for_good() {
    let Some(install) = install_under_test(15) else { return };
    if !StoreKind::S3PrivateCa.available() {
        return;
    }
    faults_inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn faults_inner(install: pgvault_tests::PgInstall) -> Result<()> {
    let store = ObjStore::start(StoreKind::S3PrivateCa).await?;
    let mut vault = Vault::new()?;
    let prefix = format!("repos/{}", vault.dir.path().file_name().and_then(|n| n.to_str()).unwrap_or("faults"));
    let direct = store.repository_config(&prefix);
    let upstream = Upstream::from_endpoint(direct.endpoint.as_deref().context("no endpoint")?, direct.ca_file.as_deref())?;
    // 25% of requests faulted; stalls of 2 s against a 10 s request timeout (the stall closes
    // the connection, the client retries).
    let proxy = FaultProxy::start(upstream, FaultPlan::mixed(20261123, 0.25, Duration::from_secs(2))).await?;
    vault.repository_toml = Some(proxied_toml(&direct, &proxy, 10, 10, 120));

    let primary = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    primary.execute("CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL)").await?;
    primary.execute("INSERT INTO t (phase) SELECT 'base' FROM generate_series(1, 5000)").await?;
    let id = vault.backup(&[])?;

    // A burst of WAL: 20 segments through archive_command and the faults.
    let mut last = String::new();
    for _ in 0..20 {
        primary.execute("INSERT INTO t (phase) SELECT 'burst' FROM generate_series(1, 50)").await?;
        last = primary.switch_wal().await?;
    }
    primary.wait_for_archived(&last, Duration::from_secs(180)).await?;
    let failed: i64 = primary.query_scalar("SELECT failed_count FROM pg_stat_archiver").await?;
    let stats = proxy.stats();
    eprintln!("fault proxy after backup and WAL burst: {stats:?}; archiver failures: {failed}");
    assert!(stats.faults() * 8 >= stats.requests && stats.requests >= 40, "the faults really happened: {stats:?}");

    let list = vault.list()?;
    assert_eq!(list["backups"][0]["id"], id.as_str(), "{list}");
    assert!(list["wal"]["segments"].as_u64().unwrap_or(0) >= 20, "every segment is archived: {list}");

    // Restore (bundles, catalogs, listings and WAL all read through every kind of fault,
    // including bodies cut off mid-response, which `Storage` resumes) to the end of the archive.
    proxy.set_plan(FaultPlan::mixed(7, 0.25, Duration::from_secs(2)));
    let expected = phases(&primary).await?;
    let mut c = vault.restore(&install, "restored", &[], false)?;
    c.start()?;
    c.wait_for_recovery_end(Duration::from_secs(240)).await?;
    assert_eq!(phases(&c).await?, expected, "the restore has the primary's rows");
    drop(c);

    // Down for good, from the first bundle upload of the next backup on. Small bounds.
    proxy.set_plan(FaultPlan::none());
    let down_config = vault.dir.join("down.toml");
    vault.repository_toml = Some(proxied_toml(&direct, &proxy, 5, 2, 10));
    vault.write_config_to(&down_config, &primary, &vault.passphrase, "")?;
    proxy.down_when_path_contains("/bundles/");
    let out = pgvault_with(&down_config, &["backup"])?;
    assert!(!out.success(), "a backup to a dead store must fail: {out}");
    assert!(proxy.is_down(), "the store went down mid-backup: {out}");
    assert!(out.elapsed < Duration::from_secs(90), "within the configured bound: {out}");
    eprintln!("backup against the dead store failed after {:.1}s: {}", out.elapsed.as_secs_f64(), out.stderr.trim());
    let down_out = out;

    // The real server, directly: only the first backup exists.
    let direct_config = vault.dir.join("direct.toml");
    vault.repository_toml = Some(store.repository_toml(&prefix));
    vault.write_config_to(&direct_config, &primary, &vault.passphrase, "")?;
    let out = pgvault_with(&direct_config, &["list", "--json"])?.check()?;
    let list: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let ids: Vec<&str> = list["backups"].as_array().context("backups")?.iter().filter_map(|b| b["id"].as_str()).collect();
    assert_eq!(ids, vec![id.as_str()], "no partial backup is listed: {list}");
    // Last, so that every other check above has run: the person reading the error must learn
    // which store died.
    assert!(down_out.stderr.contains(&direct.url), "the error names the store ({}): {down_out}", direct.url);
    drop(primary);
    Ok(())
}
