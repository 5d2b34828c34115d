//! Retention and copy over a real chain of incremental backups (issue 12, "expiring with a chain
//! keeps every kept backup restorable"), on PostgreSQL 18 only: the rules are pgvault's, not the
//! server's, and `tests/incremental.rs` already covers what 17 and 18 make of a chain.
//!
//! Full F1, incr I1, diff D1 (on F1), full F2, incr I2, ten rows committed before each. Then:
//! - with D1 pinned, `expire --keep-full 1` keeps F1 as "parent of D1" (the dry run says so and
//!   deletes nothing) and removes only I1, on which nothing kept depends; D1 still restores;
//! - unpinned, the same policy removes F1's whole chain (F1, D1) and keeps F2 and I2 (F2 shown as
//!   "parent of I2"); F2 and I2 each restore with exactly the rows committed before them;
//! - `copy` to a second repository copies the chain parent first (the dry run lists F2 before
//!   I2), and a restore of I2 from the copy gives its rows.

#[path = "recovery_common/mod.rs"]
mod recovery_common;

use anyhow::{ensure, Context, Result};
use pgvault_tests::{archiving_cluster, install_under_test, ClusterOptions, PgCluster, PgInstall, Vault};
use recovery_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_and_copy_keep_every_kept_link_restorable() {
    let Some(install) = install_under_test(18) else { return };
    scenario(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

/// The line of `text` that starts (after indentation) with `id`.
fn line_of<'a>(text: &'a str, id: &str) -> Option<&'a str> {
    text.lines().find(|l| l.trim_start().starts_with(id))
}

/// Restores `backup` to its consistency point, promotes it, and checks its rows.
async fn restores_with(install: &PgInstall, vault: &Vault, backup: &str, rows: &str) -> Result<()> {
    let name = format!("r-{backup}");
    let (r, out) = restore_and_promote(
        install,
        vault,
        &name,
        &["--backup", backup, "--target-immediate"],
        false,
    )
    .await
    .with_context(|| format!("restoring {backup}"))?;
    let got = phases(&r).await?;
    ensure!(got == rows, "{backup} restores with {got}, expected {rows} ({out})");
    drop(r);
    std::fs::remove_dir_all(vault.restore_path(&name))?;
    Ok(())
}

async fn take(c: &PgCluster, vault: &Vault, phase: &str, kind: &str, suffix: char) -> Result<String> {
    insert_phase(c, phase).await?;
    let id = vault.backup(&["--type", kind])?;
    ensure!(id.ends_with(suffix), "a {kind} backup: {id}");
    Ok(id)
}

async fn scenario(install: PgInstall) -> Result<()> {
    let t0 = std::time::Instant::now();
    let vault = Vault::new()?;
    let c = archiving_cluster(&install, &vault, ClusterOptions::default().conf("summarize_wal = on")).await?;
    create_table(&c).await?;
    let f1 = take(&c, &vault, "p0", "full", 'F').await?;
    let i1 = take(&c, &vault, "p1", "incr", 'I').await?;
    let d1 = take(&c, &vault, "p2", "diff", 'D').await?;
    let f2 = take(&c, &vault, "p3", "full", 'F').await?;
    let i2 = take(&c, &vault, "p4", "incr", 'I').await?;
    let list = vault.list()?;
    for (child, parent) in [(&i1, &f1), (&d1, &f1), (&i2, &f2)] {
        let b = list["backups"]
            .as_array()
            .context("backups[]")?
            .iter()
            .find(|b| b["id"] == child.as_str())
            .context("listed")?;
        ensure!(b["parent"] == parent.as_str(), "{child} builds on {parent}: {b}");
    }
    eprintln!("chain taken at {:?}", t0.elapsed());

    // D1 pinned: F1 must stay (D1 depends on it); I1 alone goes.
    vault.pgvault(["pin", d1.as_str(), "--note", "audit"])?.check()?;
    let dry = vault.pgvault(["expire", "--keep-full", "1", "--dry-run"])?.check()?;
    let text = &dry.stdout;
    ensure!(text.contains("backups to delete (1):"), "{dry}");
    ensure!(
        line_of(text, &i1).is_some_and(|l| !l.contains("parent of")),
        "I1 is deleted: {dry}"
    );
    ensure!(
        line_of(text, &f1).is_some_and(|l| l.contains(&format!("parent of {d1}"))),
        "the dry run shows F1 kept for its dependent D1: {dry}"
    );
    ensure!(
        line_of(text, &f2).is_some_and(|l| l.contains(&format!("parent of {i2}"))),
        "and F2 for I2: {dry}"
    );
    ensure!(vault.backup_ids()?.len() == 5, "a dry run deletes nothing");
    vault.pgvault(["expire", "--keep-full", "1"])?.check()?;
    ensure!(
        vault.backup_ids()? == [f1.as_str(), d1.as_str(), f2.as_str(), i2.as_str()],
        "only I1 went: {:?}",
        vault.backup_ids()?
    );
    restores_with(&install, &vault, &d1, "base:1 p0:10 p1:10 p2:10").await?;
    eprintln!("pinned expire checked at {:?}", t0.elapsed());

    // Unpinned: F1's chain goes whole; F2 and its dependent stay, each restorable.
    vault.pgvault(["unpin", d1.as_str()])?.check()?;
    let dry = vault.pgvault(["expire", "--keep-full", "1", "--dry-run"])?.check()?;
    ensure!(dry.stdout.contains("backups to delete (2):"), "{dry}");
    ensure!(
        line_of(&dry.stdout, &f2).is_some_and(|l| l.contains(&format!("parent of {i2}"))),
        "{dry}"
    );
    vault.pgvault(["expire", "--keep-full", "1"])?.check()?;
    ensure!(
        vault.backup_ids()? == [f2.as_str(), i2.as_str()],
        "{:?}",
        vault.backup_ids()?
    );
    restores_with(&install, &vault, &f2, "base:1 p0:10 p1:10 p2:10 p3:10").await?;
    restores_with(&install, &vault, &i2, "base:1 p0:10 p1:10 p2:10 p3:10 p4:10").await?;
    eprintln!("expire checked at {:?}", t0.elapsed());

    // Copy: parent first, and the newest incremental restores from the copy.
    let dr = Vault::new()?;
    dr.write_config(&c, "")?;
    let to = dr.config.display().to_string();
    let dry = vault.pgvault(["copy", "--to", to.as_str(), "--dry-run"])?.check()?;
    let at = |id: &str| dry.stdout.find(&format!("would copy backup {id}"));
    ensure!(
        matches!((at(&f2), at(&i2)), (Some(a), Some(b)) if a < b),
        "the chain is copied parent first: {dry}"
    );
    let out = vault.pgvault(["copy", "--to", to.as_str()])?.check()?;
    ensure!(out.stdout.contains("copied 2 backup(s)"), "{out}");
    ensure!(dr.backup_ids()? == [f2.as_str(), i2.as_str()], "{:?}", dr.backup_ids()?);
    let f2_catalog = dr.repo.join(pgvault_core::repository::layout::catalog_key(&f2));
    let i2_catalog = dr.repo.join(pgvault_core::repository::layout::catalog_key(&i2));
    let written = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified());
    ensure!(
        written(&f2_catalog)? <= written(&i2_catalog)?,
        "the parent's catalog is stored before its child's"
    );
    restores_with(&install, &dr, &i2, "base:1 p0:10 p1:10 p2:10 p3:10 p4:10").await?;
    eprintln!("copy checked at {:?}", t0.elapsed());
    Ok(())
}
