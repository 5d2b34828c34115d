//! `pgvault copy` into a second repository, on PostgreSQL 15 (the copy never talks to the server,
//! so one version is enough): a dry run writes nothing; a copy is complete and re-running it
//! copies nothing; an interrupted copy (a bundle and the catalog missing in the target) resumes,
//! and a point-in-time restore **from the target** gives the right rows; a corrupted source
//! bundle fails the copy loudly and keeps that backup out of the target; a target holding another
//! cluster's repository (or the source itself) is refused; a declared WAL gap (a marker of WAL
//! the asynchronous archiver dropped) is copied, once, so that `verify` and `restore` on the copy
//! name the same hole as on the source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgvault_core::config::Config;
use pgvault_core::repository::gaps::{WalGapMarker, REASON_QUEUE_MAX};
use pgvault_core::repository::{layout, Repository};
use pgvault_core::wal::WalFileName;
use pgvault_tests::{archiving_cluster, install_under_test, ClusterOptions, PgCluster, PgInstall, Vault};

fn pg15() -> Option<PgInstall> {
    install_under_test(15)
}

/// Rows per phase, as "a:n b:n".
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

fn copy_to(source: &Vault, target: &Vault, extra: &[&str]) -> Result<pgvault_tests::CmdOutput> {
    let mut args = vec![
        "copy".to_string(),
        "--to".to_string(),
        target.config.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    source.pgvault(&args)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_resume_restore_from_the_copy_and_corruption() {
    let Some(install) = pg15() else { return };
    copy_inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn copy_inner(install: PgInstall) -> Result<()> {
    let source = Vault::new()?;
    let primary = archiving_cluster(&install, &source, ClusterOptions::default()).await?;
    primary
        .execute("CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL)")
        .await?;
    primary
        .execute("INSERT INTO t (phase) SELECT 'base' FROM generate_series(1, 1000)")
        .await?;
    // Several bundles, so that "one bundle missing" leaves others to reuse.
    let id = {
        let out = source.pgvault(["backup"])?.check()?;
        out.stdout.split_whitespace().nth(1).context("backup id")?.to_string()
    };
    primary
        .execute("INSERT INTO t (phase) SELECT 't1' FROM generate_series(1, 100)")
        .await?;
    primary.switch_wal().await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between: String = primary
        .query_scalar("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    primary
        .execute("INSERT INTO t (phase) SELECT 't2' FROM generate_series(1, 100)")
        .await?;
    let last = primary.switch_wal().await?;
    primary.wait_for_archived(&last, Duration::from_secs(60)).await?;

    // The target: another repository directory, its own config, the same passphrase.
    let dr = Vault::new()?;
    dr.write_config(&primary, "")?;

    // Dry run: lists the backup and the WAL, writes nothing (not even the directory).
    let out = copy_to(&source, &dr, &["--dry-run"])?.check()?;
    assert!(out.stdout.contains(&format!("would copy backup {id}")), "{out}");
    assert!(out.stdout.contains("would copy WAL 0000000100000000000000"), "{out}");
    assert!(out.stdout.contains("dry run: would copy 1 backup(s)"), "{out}");
    assert!(!dr.repo.exists(), "a dry run creates nothing: {out}");

    // The copy.
    let out = copy_to(&source, &dr, &[])?.check()?;
    assert!(out.stdout.contains("copied 1 backup(s)"), "{out}");
    assert!(
        out.stdout.contains("already there: 0 backup(s), 0 WAL file(s)"),
        "{out}"
    );
    assert_eq!(dr.backup_ids()?, vec![id.clone()], "the target lists the backup");
    assert_eq!(
        std::fs::read(source.repo.join("pgvault.repo"))?,
        std::fs::read(dr.repo.join("pgvault.repo"))?,
        "the descriptor is copied byte for byte"
    );
    let src_wal = source.list()?["wal"]["segments"].clone();
    assert_eq!(
        dr.list()?["wal"]["segments"],
        src_wal,
        "every WAL segment is in the target"
    );

    // Again: nothing to do.
    let out = copy_to(&source, &dr, &[])?.check()?;
    assert!(out.stdout.contains("copied 0 backup(s), 0 WAL file(s)"), "{out}");
    assert!(out.stdout.contains("already there: 1 backup(s)"), "{out}");

    // An interrupted copy: the catalog and one bundle never made it (and so the target's backup
    // index, which a listing builds from catalogs, never learnt of the backup). Resume, then
    // restore from the target to a time between t1 and t2 (WAL fetched from the target, too).
    let backup_dir = dr.repo.join(layout::backup_dir(&id));
    std::fs::remove_file(dr.repo.join(layout::catalog_key(&id)))?;
    std::fs::remove_file(dr.repo.join(layout::BACKUP_INDEX_KEY))?;
    let removed = dr.repo.join(layout::bundle_key(&id, 0));
    std::fs::remove_file(&removed)
        .with_context(|| format!("no first bundle in the target under {}", backup_dir.display()))?;
    assert!(
        dr.repo.join(layout::manifest_key(&id)).is_file(),
        "the backup's manifest stays in the target"
    );
    assert!(
        dr.backup_ids()?.is_empty(),
        "without its catalog the backup does not exist"
    );
    let out = copy_to(&source, &dr, &[])?.check()?;
    assert!(out.stdout.contains("copied 1 backup(s), 0 WAL file(s)"), "{out}");
    assert!(removed.exists(), "the missing bundle was copied again");
    // The manifest (at least) was still there: the copy kept it rather than copying it again.
    assert!(
        out.stdout.contains("object(s) of unfinished backups"),
        "objects already there were kept: {out}"
    );
    let mut c = dr.restore(&install, "from-dr", &["--target-time", &between], false)?;
    c.start()?;
    c.wait_for_recovery_end(Duration::from_secs(180)).await?;
    assert_eq!(
        phases(&c).await?,
        "base:1000 t1:100",
        "point-in-time restore from the copy"
    );
    drop(c);

    gap_is_copied(&source, &dr, &primary).await?;

    // A corrupted source bundle: the copy fails naming it, and the target does not get that
    // backup's catalog (it stays invisible there), while the earlier backup is untouched.
    primary
        .execute("INSERT INTO t (phase) SELECT 't3' FROM generate_series(1, 100)")
        .await?;
    let id2 = {
        let out = source.pgvault(["backup"])?.check()?;
        out.stdout.split_whitespace().nth(1).context("backup id")?.to_string()
    };
    let victim = files_under(&source.repo.join(layout::backup_dir(&id2)).join("bundles"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .context("no bundle in the second backup")?;
    let mut bytes = std::fs::read(&victim)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&victim, bytes)?;
    let out = copy_to(&source, &dr, &[])?;
    assert!(!out.success(), "a corrupted source object must fail the copy: {out}");
    let rel = victim.strip_prefix(&source.repo)?.display().to_string();
    assert!(out.stderr.contains(&rel), "the error names the object: {out}");
    assert!(
        out.stderr.contains("corrupted") && out.stderr.contains("was not copied"),
        "and says what happened: {out}"
    );
    assert!(
        out.stderr.contains(&format!("backup {id2} was not copied")),
        "and which backup is missing: {out}"
    );
    assert!(out.stderr.contains("run `pgvault copy` again"), "and what to do: {out}");
    assert!(
        !dr.repo.join(layout::catalog_key(&id2)).exists(),
        "no catalog for the damaged backup"
    );
    assert_eq!(
        dr.backup_ids()?,
        vec![id.clone()],
        "the target still lists only complete backups"
    );
    Ok(())
}

/// A hole the asynchronous archiver would leave at `archive_push_queue_max`: a segment not
/// stored, and its marker. The copy stores the marker once (shown in the dry run), and the copy
/// then refuses to restore across the hole and names it in `verify`, as the source does.
async fn gap_is_copied(source: &Vault, dr: &Vault, primary: &PgCluster) -> Result<()> {
    let mut segs = Vec::new();
    for i in 0..3 {
        primary
            .execute(&format!(
                "INSERT INTO t (phase) SELECT 'g{i}' FROM generate_series(1, 100)"
            ))
            .await?;
        segs.push(primary.switch_wal().await?);
    }
    primary.wait_for_archived(&segs[2], Duration::from_secs(60)).await?;
    let dropped = WalFileName::parse(&segs[1]).context("segment name")?;
    std::fs::remove_file(source.repo.join(layout::wal_key(&dropped)))?;
    let repo = Repository::open(&Config::load(Some(&source.config))?).await?;
    repo.put_wal_gap(&WalGapMarker {
        first: dropped,
        last: dropped,
        at: chrono::Utc::now(),
        reason: REASON_QUEUE_MAX.into(),
    })
    .await?;
    // Written as root here: hand the new directory and marker to the user pgvault runs as.
    pgvault_tests::chown_to_postgres_recursive(&source.repo.join(layout::WAL_GAPS_PREFIX))?;
    let out = copy_to(source, dr, &["--dry-run"])?.check()?;
    assert!(
        out.stdout.contains("WAL gap markers: 1 to copy, 0 already there"),
        "{out}"
    );
    let marker = dr.repo.join(layout::wal_gap_key(&dropped, &dropped));
    assert!(!marker.exists(), "a dry run writes no marker");
    let out = copy_to(source, dr, &[])?.check()?;
    assert!(
        out.stdout.contains("WAL gap markers: 1 copied, 0 already there"),
        "{out}"
    );
    assert!(marker.is_file(), "the marker is in the target: {out}");
    let out = copy_to(source, dr, &[])?.check()?;
    assert!(
        out.stdout.contains("WAL gap markers: 0 copied, 1 already there"),
        "{out}"
    );
    for (name, vault) in [("source", source), ("copy", dr)] {
        let verify = vault.pgvault(["verify"])?;
        assert_eq!(verify.code(), Some(4), "{name}: verify finds the hole: {verify}");
        assert!(
            verify.stdout.contains(&segs[1]) && verify.stdout.contains("dropped by archive_push_queue_max at"),
            "{name}: verify names the hole and why: {verify}"
        );
        let restore = vault.pgvault([
            "restore",
            "--dry-run",
            "--pgdata",
            &vault.restore_path(&format!("across-{name}")).display().to_string(),
        ])?;
        assert!(
            !restore.success() && restore.stderr.contains("dropped by archive_push_queue_max at"),
            "{name}: restore refuses to cross the hole and says why: {restore}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_refuses_another_clusters_repository_and_itself() {
    let Some(install) = pg15() else { return };
    async {
        let a = Vault::new()?;
        let _ca = archiving_cluster(&install, &a, ClusterOptions::default()).await?;
        let b = Vault::new()?;
        let _cb = archiving_cluster(&install, &b, ClusterOptions::default()).await?;
        let before = files_under(&b.repo);

        let out = copy_to(&a, &b, &[])?;
        assert!(!out.success(), "another cluster's repository must be refused: {out}");
        assert!(out.stderr.contains("system identifier"), "names the mismatch: {out}");
        assert!(out.stderr.contains("nothing was copied"), "{out}");
        assert_eq!(files_under(&b.repo), before, "the foreign repository is untouched");

        // The source as its own target.
        let out = copy_to(&a, &a, &[])?;
        assert!(!out.success() && out.stderr.contains("same repository"), "{out}");

        // A target that is another `init` of the same cluster has another key: refused.
        let c = Vault::new()?;
        std::fs::create_dir_all(&c.repo)?;
        pgvault_tests::chown_to_postgres(&c.repo)?;
        c.write_config(&_ca, "")?;
        c.pgvault(["init"])?.check()?;
        let out = copy_to(&a, &c, &[])?;
        if out.success() {
            bail!("a separately initialized repository must be refused: {out}");
        }
        assert!(out.stderr.contains("another repository of this cluster"), "{out}");
        Ok::<_, anyhow::Error>(())
    }
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_local_to_s3_and_restore_from_s3() {
    let Some(install) = pg15() else { return };
    if !pgvault_tests::StoreKind::S3PrivateCa.available() {
        return;
    }
    async {
        let store = pgvault_tests::ObjStore::start(pgvault_tests::StoreKind::S3PrivateCa).await?;
        let source = Vault::new()?;
        let primary = archiving_cluster(&install, &source, ClusterOptions::default()).await?;
        primary
            .execute("CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL)")
            .await?;
        primary
            .execute("INSERT INTO t (phase) SELECT 'base' FROM generate_series(1, 1000)")
            .await?;
        let id = source.backup(&[])?;
        primary
            .execute("INSERT INTO t (phase) SELECT 'after' FROM generate_series(1, 100)")
            .await?;
        let last = primary.switch_wal().await?;
        primary.wait_for_archived(&last, Duration::from_secs(60)).await?;

        let dr = Vault::with_store(&store)?;
        dr.write_config(&primary, "")?;
        let out = copy_to(&source, &dr, &[])?.check()?;
        assert!(
            out.stdout.contains("copied 1 backup(s)") && out.stdout.contains("s3://"),
            "{out}"
        );
        assert_eq!(dr.backup_ids()?, vec![id.clone()], "the S3 copy lists the backup");
        let out = copy_to(&source, &dr, &[])?.check()?;
        assert!(
            out.stdout.contains("copied 0 backup(s), 0 WAL file(s)"),
            "nothing left to copy: {out}"
        );

        let mut c = dr.restore(&install, "from-s3", &[], false)?;
        c.start()?;
        c.wait_for_recovery_end(Duration::from_secs(180)).await?;
        assert_eq!(phases(&c).await?, "after:100 base:1000", "restore from the S3 copy");
        Ok::<_, anyhow::Error>(())
    }
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}
