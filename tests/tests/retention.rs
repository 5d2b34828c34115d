//! The retention lifecycle on a real cluster (PostgreSQL 15), with the repository on local disk
//! and on the S3 emulator: several backups with writes between; a pin; `expire --dry-run`
//! changes nothing; `expire --keep-full 2` removes exactly the planned objects (and nothing
//! pinned); every kept backup still restores, a point-in-time restore into the window gives the
//! right rows; `expire` killed at failpoints (`PGVAULT_FAILPOINT`) and run again leaves a
//! consistent repository (list works, the kept backup restores to the end); `copy` into a
//! repository with its own `[retention]` brings only what that policy keeps.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pgvault_core::repository::layout;
use pgvault_tests::bins::default_cmd_timeout;
use pgvault_tests::{
    archiving_cluster, install_under_test, run_workspace_bin, ClusterOptions, CmdOutput, ObjStore, PgCluster,
    PgInstall, StoreKind, Vault,
};
use serde_json::Value;

async fn phases(c: &PgCluster) -> Result<String> {
    let client = c.client().await?;
    let rows = client
        .query("SELECT phase, count(*) FROM t GROUP BY phase ORDER BY phase", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| format!("{}:{}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>()
        .join(" "))
}

/// Every key under `backups/`, `wal/` and `pins/`.
async fn keys(v: &Vault) -> Result<BTreeSet<String>> {
    let raw = v.raw_storage()?;
    let mut out = BTreeSet::new();
    for prefix in ["backups", "wal", "pins"] {
        out.extend(raw.list(prefix).await?.into_iter().map(|o| o.key));
    }
    Ok(out)
}

fn json_of(out: &CmdOutput) -> Result<Value> {
    serde_json::from_str(&out.stdout).with_context(|| format!("not JSON: {out}"))
}

fn ids(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn backup_ids(v: &Vault) -> Result<Vec<String>> {
    Ok(ids(&v.list()?, "backups"))
}

/// `pgvault expire` with a failpoint.
fn expire_killed_at(v: &Vault, failpoint: &str, args: &[&str]) -> Result<CmdOutput> {
    let mut all = vec!["--config".to_string(), v.config.display().to_string(), "expire".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    let fp = std::ffi::OsString::from(failpoint);
    run_workspace_bin(
        "pgvault",
        all,
        &[("PGVAULT_FAILPOINT", fp.as_os_str())],
        default_cmd_timeout(),
    )
}

async fn insert(c: &PgCluster, phase: &str) -> Result<()> {
    c.execute(&format!(
        "INSERT INTO t (phase) SELECT '{phase}' FROM generate_series(1, 100)"
    ))
    .await?;
    c.switch_wal().await?;
    // Backup ids are the server's clock to the second: the next backup gets a new one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Ok(())
}

async fn restore_rows(v: &Vault, install: &PgInstall, name: &str, args: &[&str]) -> Result<String> {
    let mut c = v.restore(install, name, args, false)?;
    c.start()?;
    c.wait_for_recovery_end(Duration::from_secs(180)).await?;
    let rows = phases(&c).await?;
    drop(c);
    let _ = std::fs::remove_dir_all(v.restore_path(name));
    Ok(rows)
}

async fn scenario(install: PgInstall, v: Vault) -> Result<()> {
    let primary = archiving_cluster(&install, &v, ClusterOptions::default()).await?;
    primary
        .execute("CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL)")
        .await?;
    insert(&primary, "a").await?;
    let b0 = v.backup(&[])?;
    insert(&primary, "b").await?;
    let b1 = v.backup(&[])?;
    insert(&primary, "c").await?;
    let b2 = v.backup(&[])?;
    insert(&primary, "d").await?;
    let b3 = v.backup(&[])?;
    insert(&primary, "e").await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between: String = primary
        .query_scalar("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    insert(&primary, "f").await?;
    let last = primary.switch_wal().await?;
    primary.wait_for_archived(&last, Duration::from_secs(60)).await?;

    // No policy: refused, nothing deleted.
    let out = v.pgvault(["expire"])?;
    ensure!(!out.success() && out.stderr.contains("no retention policy"), "{out}");

    v.pgvault(["pin", &b0, "--note", "audit"])?.check()?;
    let listed = v.list()?;
    ensure!(
        listed["backups"][0]["pin"]["note"] == "audit",
        "list shows the pin: {listed}"
    );

    // Dry run: the plan, and nothing changes.
    let before = keys(&v).await?;
    let dry = json_of(
        &v.pgvault(["expire", "--dry-run", "--json", "--keep-full", "2"])?
            .check()?,
    )?;
    ensure!(ids(&dry, "delete_backups") == vec![b1.clone()], "{dry}");
    ensure!(dry["applied"] == false, "{dry}");
    ensure!(keys(&v).await? == before, "a dry run changes nothing");

    // The real run removes exactly the planned objects.
    let done = json_of(&v.pgvault(["expire", "--json", "--keep-full", "2"])?.check()?)?;
    ensure!(ids(&done, "delete_backups") == vec![b1.clone()], "{done}");
    let planned_wal: BTreeSet<String> = done["delete_wal_objects"]
        .as_array()
        .context("delete_wal_objects")?
        .iter()
        .filter_map(|n| n.as_str())
        .map(pgvault_tests::wal_key)
        .collect::<Result<_>>()?;
    ensure!(
        !planned_wal.is_empty(),
        "WAL between b0's end and b2's start goes: {done}"
    );
    let after = keys(&v).await?;
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    let gone_wal: BTreeSet<String> = gone.iter().filter(|k| k.starts_with("wal/")).cloned().collect();
    ensure!(
        gone_wal == planned_wal,
        "deleted WAL {gone_wal:?} != planned {planned_wal:?}"
    );
    ensure!(
        gone.iter().filter(|k| !k.starts_with("wal/")).all(|k| k.contains(&b1)),
        "only b1's backup objects went: {gone:?}"
    );
    ensure!(!after.iter().any(|k| k.contains(&b1)), "every object of b1 is gone");
    ensure!(
        backup_ids(&v)? == vec![b0.clone(), b2.clone(), b3.clone()],
        "pinned b0 survives"
    );

    // Kept backups restore: the pinned one to its end (own WAL only), and a PITR in the window.
    ensure!(
        restore_rows(&v, &install, "r0", &["--backup", &b0, "--target-immediate"]).await? == "a:100",
        "pinned backup restores to its consistent point"
    );
    ensure!(
        restore_rows(&v, &install, "r1", &["--target-time", &between]).await? == "a:100 b:100 c:100 d:100 e:100",
        "point-in-time restore inside the window"
    );

    // Killed at failpoints, then run again: consistent at every stop.
    insert(&primary, "g").await?;
    let b4 = v.backup(&[])?;
    insert(&primary, "h").await?;
    let last = primary.switch_wal().await?;
    primary.wait_for_archived(&last, Duration::from_secs(60)).await?;
    for fp in ["expire:after-horizon", "expire:after-backup=1", "expire:after-wal=2"] {
        let out = expire_killed_at(&v, fp, &["--keep-full", "1"])?;
        ensure!(!out.success(), "{fp}: the failpoint killed expire: {out}");
        // The killed run's lease holds the lock until it expires (minutes): a second run is
        // refused, naming the lock; then, as its message tells an operator who is sure no run
        // is active, the lease object is deleted.
        let blocked = v.pgvault(["expire", "--keep-full", "1"])?;
        ensure!(!blocked.success() && blocked.stderr.contains("lock"), "{fp}: {blocked}");
        v.raw_storage()?.delete(&layout::lock_key("repository")).await?;
        let ids_now = backup_ids(&v)?;
        ensure!(ids_now.contains(&b0) && ids_now.contains(&b4), "{fp}: {ids_now:?}");
    }
    v.pgvault(["expire", "--json", "--keep-full", "1"])?.check()?;
    ensure!(
        backup_ids(&v)? == vec![b0.clone(), b4.clone()],
        "re-run finished the deletions"
    );
    let again = json_of(
        &v.pgvault(["expire", "--dry-run", "--json", "--keep-full", "1"])?
            .check()?,
    )?;
    ensure!(
        ids(&again, "delete_backups").is_empty()
            && again["delete_wal_objects"].as_array().is_some_and(|a| a.is_empty()),
        "nothing left to do: {again}"
    );
    ensure!(
        restore_rows(&v, &install, "r2", &[]).await? == "a:100 b:100 c:100 d:100 e:100 f:100 g:100 h:100",
        "the kept backup restores to the end"
    );
    v.pgvault(["unpin", &b0])?.check()?;

    // copy brings only what the target's own [retention] keeps: the newest backup and its WAL.
    let dr = Vault::new()?;
    dr.write_config(&primary, "\n[retention]\nkeep_full = 1\n")?;
    let out = v.pgvault(["copy", "--to", &dr.config.display().to_string()])?.check()?;
    ensure!(
        out.stdout
            .contains("left out under the target's [retention]: 1 backup(s)"),
        "{out}"
    );
    ensure!(backup_ids(&dr)? == vec![b4.clone()], "only the kept backup was copied");
    let left = json_of(&dr.pgvault(["expire", "--dry-run", "--json"])?.check()?)?;
    ensure!(
        ids(&left, "delete_backups").is_empty() && left["delete_wal_objects"].as_array().is_some_and(|a| a.is_empty()),
        "the target's expire finds nothing to delete: {left}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_local() {
    let Some(install) = install_under_test(15) else { return };
    let run = async { scenario(install, Vault::new()?).await };
    run.await.unwrap_or_else(|e: anyhow::Error| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_s3() {
    let Some(install) = install_under_test(15) else { return };
    let Some(store) = ObjStore::for_test(StoreKind::S3PrivateCa).await else {
        return;
    };
    let run = async { scenario(install, Vault::with_store(&store)?).await };
    run.await
        .unwrap_or_else(|e: anyhow::Error| panic!("s3: {e:#}\nstore log tail:\n{}", store.log_tail()));
}
