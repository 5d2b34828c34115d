//! `pgvault verify` and `pgvault check` on PostgreSQL 15 (pgvault's own logic: one version):
//! `check` proves the archive path and fails naming archive_command when archiving is broken; a
//! whole repository verifies with exit 0; a WAL segment deleted by hand makes verify exit 4 naming
//! it and the affected window; one flipped byte in a bundle makes it exit 4 naming the backup and
//! the file; a wrong passphrase exits 1; and the same on S3.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pgvault_core::repository::layout;
use pgvault_tests::{
    archiving_cluster, install_under_test, wal_key, write_postgres_file, ClusterOptions, CmdOutput, ObjStore,
    PgCluster, PgInstall, StoreKind, Vault,
};
use serde_json::Value;

fn pg15() -> Option<PgInstall> {
    install_under_test(15)
}

fn verify_json(v: &Vault, extra: &[&str]) -> Result<(CmdOutput, Value)> {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let out = v.pgvault(&args)?;
    let json: Value =
        serde_json::from_str(&out.stdout).with_context(|| format!("verify --json printed no JSON: {out}"))?;
    Ok((out, json))
}

/// Writes rows and switches WAL `n` times, waiting for the last segment; returns the switched
/// segments' names.
async fn segments(c: &PgCluster, n: usize) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for _ in 0..n {
        c.execute("INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 500) g")
            .await?;
        names.push(c.switch_wal().await?);
    }
    let last = names.last().context("no segment")?;
    c.wait_for_archived(last, Duration::from_secs(60)).await?;
    Ok(names)
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
async fn verify_and_check_on_a_local_repository() {
    let Some(install) = pg15() else { return };
    local_inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn local_inner(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let primary = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    primary
        .execute("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        .await?;
    primary
        .execute("INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 20000) g")
        .await?;
    let id = vault.backup(&[])?;
    let after = segments(&primary, 3).await?;

    // check: the archive path works.
    let out = vault.pgvault(["check", "--json", "--timeout", "60s"])?.check()?;
    let checked: Value = serde_json::from_str(&out.stdout).with_context(|| out.to_string())?;
    ensure!(checked["ok"] == true, "{out}");
    let seg = checked["segment"].as_str().context("segment")?;
    ensure!(
        vault.repo.join(wal_key(seg)?).exists(),
        "check's segment is in the repository: {out}"
    );

    // A whole repository.
    let (out, report) = verify_json(&vault, &[])?;
    ensure!(out.code() == Some(0), "a whole repository verifies: {out}");
    ensure!(
        report["whole"] == true && report["findings"] == serde_json::json!([]),
        "{out}"
    );
    ensure!(
        report["backups"][0]["id"] == id.as_str() && report["backups"][0]["ok"] == true,
        "{out}"
    );
    ensure!(report["backups"][0]["restorable"]["to"] == "window", "{out}");
    ensure!(report["counts"]["bundles"].as_u64() > Some(0), "{out}");
    ensure!(report["counts"]["manifests"] == 1, "{out}");
    ensure!(report["counts"]["wal_files"].as_u64() >= Some(4), "{out}");
    // Objects are streamed: memory is bounded by --parallel, not by the repository's size.
    let (human, peak_kib) = vault.pgvault_peak_memory(["verify"])?;
    ensure!(human.code() == Some(0) && human.stdout.contains("is whole"), "{human}");
    eprintln!("verify peak memory: {} MiB", peak_kib / 1024);
    ensure!(peak_kib < 300 * 1024, "verify used {peak_kib} KiB: {human}");

    // One WAL segment deleted by hand: exit 4, naming it and the window it cuts.
    let victim = &after[1];
    let path = vault.repo.join(wal_key(victim)?);
    let kept = std::fs::read(&path)?;
    std::fs::remove_file(&path)?;
    let (out, report) = verify_json(&vault, &[])?;
    ensure!(out.code() == Some(4), "a missing segment is damage: {out}");
    let gap = report["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["kind"] == "wal_gap"))
        .with_context(|| format!("no wal_gap finding: {out}"))?;
    ensure!(
        gap["first_missing"] == victim.as_str() && gap["last_missing"] == victim.as_str(),
        "{out}"
    );
    ensure!(gap["window_from"] == id.as_str(), "names the window it cuts: {out}");
    let window = &report["backups"][0]["restorable"];
    ensure!(window["to"] == "window", "{out}");
    let end_lsn = window["end_lsn"].as_str().context("end_lsn")?;
    ensure!(gap["window_end"] == end_lsn, "{out}");
    let human = vault.pgvault(["verify"])?;
    eprintln!("{human}");
    ensure!(human.code() == Some(4), "{human}");
    ensure!(human.stdout.starts_with("DAMAGE"), "damage first: {human}");
    ensure!(human.stdout.contains(victim.as_str()), "names the segment: {human}");
    ensure!(human.stdout.contains(end_lsn), "names where the window ends: {human}");
    write_postgres_file(&path, kept, 0o600)?;
    ensure!(verify_json(&vault, &[])?.0.code() == Some(0), "whole again");

    // One flipped byte in a bundle: exit 4, naming the backup and the file.
    let bundle = files_under(&vault.repo.join(layout::backup_dir(&id)).join("bundles"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .context("no bundle")?;
    let original = std::fs::read(&bundle)?;
    let mut bytes = original.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&bundle, &bytes)?;
    let (out, report) = verify_json(&vault, &["--backup", &id])?;
    ensure!(out.code() == Some(4), "a flipped byte is damage: {out}");
    let f = &report["findings"][0];
    ensure!(f["kind"] == "bundle_damaged" && f["backup"] == id.as_str(), "{out}");
    ensure!(
        f["file"].as_str().is_some_and(|p| !p.is_empty()),
        "names the file: {out}"
    );
    ensure!(
        report["backups"][0]["ok"] == false && report["backups"][0]["restorable"]["to"] == "no",
        "{out}"
    );
    let human = vault.pgvault(["verify", "--parallel", "2"])?;
    eprintln!("{human}");
    ensure!(human.code() == Some(4), "{human}");
    ensure!(human.stdout.contains(&format!("backup {id}: bundle")), "{human}");
    ensure!(human.stdout.contains(&format!("not restorable: {id}")), "{human}");
    std::fs::write(&bundle, &original)?;

    // A wrong passphrase: verify could not run.
    let wrong = vault.dir.join("wrong-passphrase");
    write_postgres_file(&wrong, "not the passphrase at all\n", 0o600)?;
    vault.write_config_to(&vault.config, &primary, &wrong, "")?;
    let out = vault.pgvault(["verify"])?;
    ensure!(
        out.code() == Some(1),
        "a wrong passphrase is an error, not a finding: {out}"
    );
    ensure!(out.stderr.contains("passphrase"), "{out}");
    vault.write_config(&primary, "")?;
    ensure!(
        vault.pgvault(["verify"])?.code() == Some(0),
        "whole with the right passphrase"
    );

    // check against a standby: refused, pointing at the primary.
    let mut standby = vault.restore(&install, "standby", &[], false)?;
    write_postgres_file(&standby.data_dir().join("standby.signal"), "", 0o600)?;
    standby.start()?;
    ensure!(standby.is_in_recovery().await?, "the standby stays in recovery");
    vault.write_config(&standby, "")?;
    let out = vault.pgvault(["check", "--timeout", "10s"])?;
    ensure!(
        out.code() == Some(1) && out.stderr.contains("standby"),
        "a standby is refused: {out}"
    );
    ensure!(out.stderr.contains("primary"), "{out}");
    standby.stop()?;
    vault.write_config(&primary, "")?;

    // check with archiving broken: exit 1, naming archive_command.
    primary.alter_system("archive_command", "false").await?;
    let out = vault.pgvault(["check", "--timeout", "60s"])?;
    ensure!(out.code() == Some(1), "check fails when archiving is broken: {out}");
    ensure!(out.stderr.contains("archive_command"), "names archive_command: {out}");
    ensure!(
        out.elapsed < Duration::from_secs(50),
        "fails as soon as the archiver reports: {out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_s3_finds_a_missing_segment() {
    let Some(install) = pg15() else { return };
    let Some(store) = ObjStore::for_test(StoreKind::S3PrivateCa).await else {
        return;
    };
    async {
        let vault = Vault::with_store(&store)?;
        let primary = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
        primary
            .execute("CREATE TABLE t (id serial PRIMARY KEY, v text)")
            .await?;
        let id = vault.backup(&[])?;
        let after = segments(&primary, 3).await?;
        let (out, report) = verify_json(&vault, &[])?;
        ensure!(out.code() == Some(0) && report["whole"] == true, "{out}");
        ensure!(report["backups"][0]["id"] == id.as_str(), "{out}");
        let raw = vault.raw_storage()?;
        raw.delete(&wal_key(&after[1])?).await?;
        let (out, report) = verify_json(&vault, &[])?;
        ensure!(out.code() == Some(4), "{out}");
        ensure!(
            report["findings"].as_array().is_some_and(|f| f
                .iter()
                .any(|f| f["kind"] == "wal_gap" && f["first_missing"] == after[1].as_str())),
            "{out}"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}
