//! Incremental backups on PostgreSQL 17 and 18 (issue 12): what PostgreSQL itself makes of a
//! chain `pgvault` stored and restored in one pass.
//!
//! - `chain`: full, incr, incr, diff with rows, a truncated relation, a dropped relation and a
//!   new database between the links; restores to a point after each link hold exactly the rows
//!   committed before it; the newest restore passes amcheck (and `pg_verifybackup` on 18, which
//!   also checks the manifest pgvault writes for the combined result).
//! - `fallbacks`: `summarize_wal = off` and a parent whose manifest was damaged by hand give a
//!   full backup with the reason, or a failure with `incremental_fallback = "fail"`.
//! - `timeline_switch`: a cluster restored from a full backup and promoted (timeline 2) has no
//!   WAL summaries of timeline 1, so the server refuses an incremental backup against the
//!   timeline-1 full: a full backup is taken with the server's reason; the next incremental
//!   backup on timeline 2 works and restores.
//! - `refused_before_17`: `--type incr` on PostgreSQL 15 is refused with a clear message.

#[path = "recovery_common/mod.rs"]
mod recovery_common;

use anyhow::{ensure, Context, Result};
use pgvault_tests::{archiving_cluster, install_under_test, ClusterOptions, PgCluster, PgInstall, Vault};
use recovery_common::*;

macro_rules! pg17_and_18 {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg17() {
                if let Some(i) = pgvault_tests::install_under_test(17) {
                    super::$body(i).await.unwrap_or_else(|e| panic!("{e:#}"));
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg18() {
                if let Some(i) = pgvault_tests::install_under_test(18) {
                    super::$body(i).await.unwrap_or_else(|e| panic!("{e:#}"));
                }
            }
        }
    };
}

pg17_and_18!(chain, chain_scenario);
pg17_and_18!(fallbacks, fallbacks_scenario);
pg17_and_18!(timeline_switch, timeline_switch_scenario);

async fn summarizing_cluster(install: &PgInstall, vault: &Vault) -> Result<PgCluster> {
    let c = archiving_cluster(install, vault, ClusterOptions::default().conf("summarize_wal = on")).await?;
    create_table(&c).await?;
    Ok(c)
}

async fn count(c: &PgCluster, sql: &str) -> Result<i64> {
    c.query_scalar(sql).await.with_context(|| sql.to_string())
}

async fn chain_scenario(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let c = summarizing_cluster(&install, &vault).await?;
    c.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)").await?;
    c.execute("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
        .await?;
    c.execute("CREATE TABLE dropme (id int)").await?;
    c.execute("INSERT INTO dropme SELECT generate_series(1, 1000)").await?;
    insert_phase(&c, "p0").await?;
    let full = vault.backup(&[])?;
    ensure!(full.ends_with('F'), "{full}");

    insert_phase(&c, "p1").await?;
    c.execute("UPDATE big SET pad = repeat('y', 200) WHERE id BETWEEN 5000 AND 5100")
        .await?;
    c.execute("CREATE DATABASE newdb").await?;
    let i1 = vault.backup(&["--type", "incr"])?;
    ensure!(i1.ends_with('I'), "an incremental backup's id ends in I: {i1}");
    let t1 = server_time_between(&c).await?;

    insert_phase(&c, "p2").await?;
    // Truncation: the tail of `big` emptied and vacuumed away; `dropme` dropped.
    c.execute("DELETE FROM big WHERE id > 3000").await?;
    c.execute("VACUUM big").await?;
    c.execute("DROP TABLE dropme").await?;
    let i2 = vault.backup(&["--type", "incr"])?;
    ensure!(i2.ends_with('I'), "{i2}");
    let t2 = server_time_between(&c).await?;

    insert_phase(&c, "p3").await?;
    c.execute("INSERT INTO big SELECT g, 'z' FROM generate_series(3001, 3500) g")
        .await?;
    let d = vault.backup(&["--type", "diff"])?;
    ensure!(d.ends_with('D'), "{d}");
    let t3 = server_time_between(&c).await?;
    insert_phase(&c, "p4").await?;
    switch_and_archive(&c).await?;

    let list = vault.list()?;
    let text = list.to_string();
    ensure!(
        text.contains(&format!("\"parent\":\"{full}\"")),
        "list shows the chain: {text}"
    );
    ensure!(
        text.contains(&format!("\"parent\":\"{i1}\"")),
        "list shows the chain: {text}"
    );

    // The newest link restored as is (no target): pg_verifybackup on the combined result.
    let (r, out) = restore_as_is(&install, &vault, "as-is", &["--backup", &d, "--target-immediate"])?;
    ensure!(out.success(), "{out}");
    if let Some(v) = r.pg_verifybackup(r.data_dir(), None)? {
        ensure!(v.success(), "pg_verifybackup accepts the combined restore of {d}: {v}");
    }
    let label = std::fs::read_to_string(r.data_dir().join("backup_label"))?;
    ensure!(!label.contains("INCREMENTAL FROM"), "backup_label: {label}");
    ensure!(
        !r.data_dir().join("base").read_dir()?.any(|e| e
            .ok()
            .map(|e| e
                .path()
                .read_dir()
                .map(|mut d| d.any(|f| f
                    .ok()
                    .is_some_and(|f| f.file_name().to_string_lossy().starts_with("INCREMENTAL."))))
                .unwrap_or(false))
            .unwrap_or(false)),
        "no INCREMENTAL. file restored"
    );
    drop(r);

    let expected = [
        (t1.as_str(), "base:1 p0:10 p1:10", 20000i64),
        (t2.as_str(), "base:1 p0:10 p1:10 p2:10", 3000),
        (t3.as_str(), "base:1 p0:10 p1:10 p2:10 p3:10", 3500),
    ];
    for (i, (t, rows, big)) in expected.iter().enumerate() {
        let (r, out) = restore_and_promote(&install, &vault, &format!("t{i}"), &["--target-time", t], false).await?;
        ensure!(
            phases(&r).await? == *rows,
            "restore to {t} ({out}): {}",
            phases(&r).await?
        );
        ensure!(count(&r, "SELECT count(*) FROM big").await? == *big, "big at {t}");
        let pad: i64 = count(&r, "SELECT count(*) FROM big WHERE pad LIKE 'y%'").await?;
        ensure!(
            pad == if i == 0 { 101 } else { 0 },
            "the updated range comes back at {t}: {pad} ({out})"
        );
        let dropped: i64 = count(&r, "SELECT count(*) FROM pg_class WHERE relname = 'dropme'").await?;
        ensure!(
            dropped == i64::from(i == 0),
            "dropme exists only before its drop (at {t})"
        );
        ensure!(count(&r, "SELECT count(*) FROM pg_database WHERE datname = 'newdb'").await? == 1);
        r.pg_amcheck()?;
    }
    let (r, _) = restore_and_promote(&install, &vault, "end", &[], false).await?;
    ensure!(phases(&r).await? == "base:1 p0:10 p1:10 p2:10 p3:10 p4:10");
    Ok(())
}

async fn fallbacks_scenario(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let c = summarizing_cluster(&install, &vault).await?;
    let out = vault.pgvault(["backup", "--type", "incr"])?.check()?;
    ensure!(out.stdout.contains("F complete"), "no backup yet: a full one ({out})");
    ensure!(out.stderr.contains("no backup to be incremental to"), "{out}");

    // A parent whose manifest was damaged by hand: not usable, so a full backup, said why.
    let storage = vault.raw_storage()?;
    let id = vault.list()?["backups"][0]["id"].as_str().context("id")?.to_string();
    let key = pgvault_core::repository::layout::manifest_key(&id);
    let mut up = storage.upload(&key).await?;
    up.write(b"garbage").await?;
    up.finish().await?;
    let out = vault.pgvault(["backup", "--type", "incr"])?.check()?;
    ensure!(out.stdout.contains("F complete"), "{out}");
    ensure!(out.stderr.contains(&id), "the reason names the parent: {out}");

    // summarize_wal off: full with the reason, or a failure when configured so.
    c.alter_system("summarize_wal", "off").await?;
    c.reload()?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let out = vault.pgvault(["backup", "--type", "diff"])?.check()?;
    ensure!(
        out.stdout.contains("F complete") && out.stderr.contains("summarize_wal"),
        "{out}"
    );
    vault.write_config(&c, "incremental_fallback = \"fail\"\n")?;
    let out = vault.pgvault(["backup", "--type", "incr"])?;
    ensure!(out.code() == Some(1), "incremental_fallback = fail: {out}");
    ensure!(out.stderr.contains("summarize_wal"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_before_17() {
    let Some(install) = install_under_test(15) else { return };
    let run = async {
        let vault = Vault::new()?;
        let _c = summarizing_cluster_15(&install, &vault).await?;
        let out = vault.pgvault(["backup", "--type", "incr"])?;
        ensure!(out.code() == Some(1), "{out}");
        ensure!(out.stderr.contains("PostgreSQL 17 or later"), "{out}");
        Ok::<(), anyhow::Error>(())
    };
    run.await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn summarizing_cluster_15(install: &PgInstall, vault: &Vault) -> Result<PgCluster> {
    archiving_cluster(install, vault, ClusterOptions::default()).await
}

async fn timeline_switch_scenario(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let mut a = summarizing_cluster(&install, &vault).await?;
    insert_phase(&a, "p0").await?;
    vault.backup(&[])?;
    insert_phase(&a, "p1").await?;
    switch_and_archive(&a).await?;
    a.stop()?;

    let (b, _) = restore_and_promote(&install, &vault, "b", &[], true).await?;
    vault.write_config(&b, "")?;
    insert_phase(&b, "p2").await?;
    let out = vault.pgvault(["backup", "--type", "incr"])?.check()?;
    ensure!(
        out.stdout.contains("F complete") && out.stderr.contains("taking a full backup instead"),
        "the timeline-1 parent cannot be used from timeline 2 without its summaries: {out}"
    );
    insert_phase(&b, "p3").await?;
    let i = vault.backup(&["--type", "incr"])?;
    ensure!(i.ends_with('I'), "{i}");
    insert_phase(&b, "p4").await?;
    switch_and_archive(&b).await?;
    let (r, _) = restore_and_promote(&install, &vault, "r", &[], false).await?;
    let rows = phases(&r).await?;
    ensure!(rows == "base:1 p0:10 p1:10 p2:10 p3:10 p4:10", "{rows}");
    Ok(())
}
