//! Scenarios shared by several test files (`mod common;`).
//!
//! Point-in-time recovery end to end: rows committed at T1 < T2 < T3 with WAL switches between
//! them, a backup taken before T1, and restores to a point between T2 and T3 by time, LSN,
//! transaction id and restore point; `--target-immediate`; a tablespace; `pg_verifybackup` and
//! `pg_amcheck` on the result; and a second restore along the new timeline of a
//! restored-and-promoted cluster that keeps archiving into the same repository. Run by `pitr.rs`
//! (local repository, every PostgreSQL version) and `cloud_pitr.rs` (each object store).
//!
//! A tablespace restored *without* `--tablespace-map` (`tablespace_original_location`): restore
//! refuses while the original tablespace directory still holds data, and once it is moved away
//! the tablespace goes back to its original absolute path. Run by `pitr.rs` on PostgreSQL 15.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use pgvault_tests::{archiving_cluster, ClusterOptions, PgCluster, PgInstall, Vault};

const RECOVERY: Duration = Duration::from_secs(180);

/// Rows per phase in the restored cluster, as "t1:n t2:n …".
async fn phases(c: &PgCluster, table: &str) -> Result<String> {
    let client = c.client().await?;
    let rows = client
        .query(
            &format!("SELECT phase, count(*) FROM {table} GROUP BY phase ORDER BY phase"),
            &[],
        )
        .await
        .with_context(|| format!("counting {table}"))?;
    Ok(rows
        .iter()
        .map(|r| format!("{}:{}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>()
        .join(" "))
}

async fn insert_phase(c: &PgCluster, phase: &str) -> Result<()> {
    c.execute(&format!(
        "INSERT INTO t (phase) SELECT '{phase}' FROM generate_series(1, 100)"
    ))
    .await?;
    c.execute(&format!(
        "INSERT INTO ts_t (phase) SELECT '{phase}' FROM generate_series(1, 10)"
    ))
    .await
}

async fn start_restored(mut c: PgCluster) -> Result<PgCluster> {
    c.start()?;
    c.wait_for_recovery_end(RECOVERY).await?;
    Ok(c)
}

/// The whole scenario (see the module docs of `pitr.rs`) against `vault`'s repository, which
/// may be local or on an object store.
pub async fn pitr_scenario(install: PgInstall, vault: Vault) -> Result<()> {
    let primary = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    let ts_dir = vault.dir.subdir("tablespace")?;
    primary
        .execute(&format!("CREATE TABLESPACE ts LOCATION '{}'", ts_dir.display()))
        .await?;
    primary
        .execute(
            "CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL, at timestamptz DEFAULT clock_timestamp())",
        )
        .await?;
    primary
        .execute("CREATE TABLE ts_t (id serial PRIMARY KEY, phase text NOT NULL) TABLESPACE ts")
        .await?;
    primary.execute("INSERT INTO t (phase) VALUES ('base')").await?;

    let backup_id = vault.backup(&[])?;
    let list = vault.list()?;
    assert_eq!(
        list["backups"][0]["id"],
        backup_id.as_str(),
        "list shows the backup: {list}"
    );

    // T1
    insert_phase(&primary, "t1").await?;
    primary.switch_wal().await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // T2, in one transaction whose id is the xid target.
    let client = primary.client().await?;
    client.batch_execute("BEGIN").await?;
    let xid: i64 = client.query_one("SELECT txid_current()", &[]).await?.get(0);
    client.batch_execute("INSERT INTO t (phase) SELECT 't2' FROM generate_series(1, 100); INSERT INTO ts_t (phase) SELECT 't2' FROM generate_series(1, 10); COMMIT").await?;
    let lsn_after_t2 = primary.current_lsn().await?;
    primary.create_restore_point("after_t2").await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between: String = primary
        .query_scalar("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    primary.switch_wal().await?;
    // T3
    insert_phase(&primary, "t3").await?;
    let last = primary.switch_wal().await?;
    primary.wait_for_archived(&last, Duration::from_secs(60)).await?;

    let expected = "base:1 t1:100 t2:100";
    // The original tablespace directory belongs to the running primary: every restore maps it.
    let ts_map = |name: &str| {
        format!(
            "{}={}",
            ts_dir.display(),
            vault.restore_path(&format!("{name}-ts")).display()
        )
    };
    let expected_ts = "t1:10 t2:10";

    // By time, with the tablespace moved elsewhere; then PostgreSQL's own checks.
    let moved = vault.restore_path("ts-moved");
    let map = format!("{}={}", ts_dir.display(), moved.display());
    let c = vault.restore(
        &install,
        "by-time",
        &["--target-time", &between, "--tablespace-map", &map],
        false,
    )?;
    if let Some(verify) = c.pg_verifybackup(c.data_dir(), None)? {
        assert!(
            verify.success(),
            "pg_verifybackup disagrees with the stored manifest: {verify}"
        );
    }
    let c = start_restored(c).await?;
    assert_eq!(phases(&c, "t").await?, expected, "restore by time");
    assert_eq!(phases(&c, "ts_t").await?, expected_ts, "tablespace contents");
    let link = std::fs::read_link(
        c.data_dir()
            .join("pg_tblspc")
            .read_dir()?
            .next()
            .context("no tablespace link")??
            .path(),
    )?;
    assert_eq!(link, moved, "the tablespace was mapped");
    c.pg_amcheck()?;
    drop(c);

    // By LSN, by xid, by restore point: the same rows.
    let xid = xid.to_string();
    for (name, args) in [
        ("by-lsn", vec!["--target-lsn", lsn_after_t2.as_str()]),
        ("by-xid", vec!["--target-xid", xid.as_str()]),
        ("by-name", vec!["--target-name", "after_t2"]),
    ] {
        let map = ts_map(name);
        let mut args = args;
        args.extend(["--tablespace-map", map.as_str()]);
        let c = vault.restore(&install, name, &args, false)?;
        let c = start_restored(c).await?;
        assert_eq!(phases(&c, "t").await?, expected, "restore {name}");
        drop(c);
    }

    // Immediate: consistent right after the backup, before T1.
    let c = start_restored(vault.restore(
        &install,
        "immediate",
        &["--target-immediate", "--tablespace-map", &ts_map("immediate")],
        false,
    )?)
    .await?;
    assert_eq!(phases(&c, "t").await?, "base:1", "restore --target-immediate");
    drop(c);

    // A target after the newest archived WAL is refused up front, naming where the archive ends.
    let out = vault.pgvault([
        "restore",
        "--pgdata",
        &vault.restore_path("too-late").display().to_string(),
        "--target-time",
        "2999-01-01 00:00:00+00",
    ])?;
    assert!(!out.success(), "a target in the future must be refused: {out}");
    assert!(
        out.stderr.contains("beyond the end of the archived WAL") && out.stderr.contains("last commit at"),
        "the error names the archive's end and its last commit: {out}"
    );
    assert!(
        !vault.restore_path("too-late").exists(),
        "nothing is written for a refused target"
    );

    // Timelines: a restored cluster, promoted, keeps archiving into the repository on timeline 2…
    let mut tl2 = start_restored(vault.restore(
        &install,
        "timeline2",
        &["--target-time", &between, "--tablespace-map", &ts_map("timeline2")],
        true,
    )?)
    .await?;
    let tli: i32 = tl2
        .query_scalar("SELECT timeline_id FROM pg_control_checkpoint()")
        .await
        .unwrap_or(0);
    tl2.execute("CHECKPOINT").await?;
    insert_phase(&tl2, "t4").await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let on_tl2: String = tl2
        .query_scalar("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    tl2.switch_wal().await?;
    insert_phase(&tl2, "t5").await?;
    let last = tl2.switch_wal().await?;
    tl2.wait_for_archived(&last, Duration::from_secs(60)).await?;
    assert!(
        last.starts_with("00000002"),
        "the promoted cluster archives on timeline 2 (got {last}, checkpoint tli {tli})"
    );
    tl2.stop()?;

    // …and a second restore reaches a point on that new timeline from the original backup.
    let c = start_restored(vault.restore(
        &install,
        "on-timeline2",
        &["--target-time", &on_tl2, "--tablespace-map", &ts_map("on-timeline2")],
        false,
    )?)
    .await?;
    assert_eq!(
        phases(&c, "t").await?,
        "base:1 t1:100 t2:100 t4:100",
        "restore along timeline 2"
    );
    drop(c);
    Ok(())
}

/// Every file and directory below `dir` with its size and modification time, sorted, to show
/// that nothing in it changed.
fn tree_listing(dir: &Path) -> Result<Vec<(PathBuf, u64, Option<SystemTime>)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let meta = e.path().symlink_metadata()?;
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), meta.len(), meta.modified().ok()));
        }
    }
    out.sort();
    Ok(out)
}

/// A tablespace restored without `--tablespace-map` goes back to its original absolute path.
///
/// While the source cluster's tablespace directory is still there (and not empty), restore must
/// refuse, name it, and write nothing, neither into it nor into the new data directory. With the
/// source stopped and its tablespace directory renamed aside (kept, to compare), restore puts the
/// tablespace back at the original path: the restored cluster holds exactly the rows committed
/// before the end of the archive, `pg_tablespace` and the `pg_tblspc` link name the original
/// path, and the table's file stands at the same place as in the original directory.
pub async fn tablespace_original_location(install: PgInstall, vault: Vault) -> Result<()> {
    let mut primary = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    let ts_dir = vault.dir.subdir("tablespace")?;
    primary
        .execute(&format!("CREATE TABLESPACE ts LOCATION '{}'", ts_dir.display()))
        .await?;
    primary
        .execute("CREATE TABLE ts_t (id serial PRIMARY KEY, phase text NOT NULL) TABLESPACE ts")
        .await?;
    primary
        .execute("INSERT INTO ts_t (phase) SELECT 'base' FROM generate_series(1, 10)")
        .await?;
    vault.backup(&[])?;
    // After the backup: only WAL replay from the archive brings these back.
    primary
        .execute("INSERT INTO ts_t (phase) SELECT 't1' FROM generate_series(1, 10)")
        .await?;
    let last = primary.switch_wal().await?;
    primary.wait_for_archived(&last, Duration::from_secs(60)).await?;
    let ts_oid: String = primary
        .query_scalar("SELECT oid::text FROM pg_tablespace WHERE spcname = 'ts'")
        .await?;
    let relpath: String = primary.query_scalar("SELECT pg_relation_filepath('ts_t')").await?;
    // pg_tblspc/<oid>/PG_<major>_<catversion>/<db>/<relfilenode>: its place inside the tablespace.
    let inner = relpath
        .strip_prefix(&format!("pg_tblspc/{ts_oid}/"))
        .with_context(|| format!("ts_t is not in tablespace {ts_oid}: {relpath}"))?
        .to_string();
    primary.stop()?;

    // The original directory still holds the source's tablespace: restore must not touch it.
    let before = tree_listing(&ts_dir)?;
    assert!(!before.is_empty(), "the source tablespace directory holds files");
    let refused = vault.restore_path("ts-in-use");
    let out = vault.pgvault(["restore", "--pgdata", &refused.display().to_string()])?;
    assert!(
        !out.success(),
        "restore without --tablespace-map into a non-empty original tablespace directory must be refused: {out}"
    );
    assert!(
        out.stderr.contains(&ts_dir.display().to_string())
            && out.stderr.contains("not empty")
            && out.stderr.contains("--tablespace-map"),
        "the error names the non-empty tablespace directory and the way out: {out}"
    );
    assert!(
        !refused.exists(),
        "nothing is written for a refused restore (data directory {} exists)",
        refused.display()
    );
    assert_eq!(
        tree_listing(&ts_dir)?,
        before,
        "the original tablespace directory is untouched"
    );

    // Moved aside, the original path is free: restore puts the tablespace back there.
    let aside = vault.restore_path("tablespace-aside");
    std::fs::rename(&ts_dir, &aside).with_context(|| format!("moving {} aside", ts_dir.display()))?;
    let c = start_restored(vault.restore(&install, "no-map", &[], false)?).await?;
    assert_eq!(
        phases(&c, "ts_t").await?,
        "base:10 t1:10",
        "tablespace contents restored without a map"
    );
    let location: String = c
        .query_scalar("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts'")
        .await?;
    assert_eq!(
        PathBuf::from(location),
        ts_dir,
        "pg_tablespace names the original location"
    );
    let link = std::fs::read_link(c.data_dir().join("pg_tblspc").join(&ts_oid))?;
    assert_eq!(link, ts_dir, "the pg_tblspc link points at the original location");
    assert!(
        aside.join(&inner).is_file(),
        "the source's table file {inner} is in the directory moved aside"
    );
    assert!(
        ts_dir.join(&inner).is_file(),
        "the table file {inner} is back at its original place"
    );
    c.pg_amcheck()?;
    Ok(())
}
