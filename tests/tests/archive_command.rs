//! The `archive_command` / `restore_command` contract, with real WAL from real clusters:
//! identical re-push succeeds, different content under an archived name fails and overwrites
//! nothing, a foreign cluster's segment is refused, a missing file on fetch is a quiet exit 1,
//! and a wrong passphrase, a flipped byte and a truncated object are loud, clear failures.
//! Every fetch is compared byte for byte with what PostgreSQL handed `archive_command` (the
//! vault keeps a copy, [`Vault::keep_archived_copies`]).
//!
//! What it checks is pgvault-archive's logic, the same whatever server produced the WAL, so it
//! runs on PostgreSQL 15 only.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pgvault_tests::{
    archiving_cluster, install_under_test, wal_key, write_postgres_file, ClusterOptions, PgInstall, Vault,
};

/// The stored object of WAL file `name` in the vault's (local) repository, at the key pgvault's
/// layout gives it.
fn object_path(vault: &Vault, name: &str) -> Result<PathBuf> {
    Ok(vault.repo.join(wal_key(name)?))
}

/// A copy of an archived segment's original bytes, fetched back through pgvault-archive.
fn fetch_to(vault: &Vault, name: &str, dest: &Path) -> Result<pgvault_tests::CmdOutput> {
    vault.archive(["fetch", name, &dest.display().to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_contract() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn inner(install: PgInstall) -> Result<()> {
    let mut vault = Vault::new()?;
    vault.keep_archived_copies()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    let seg = cluster.archive_fresh_segment().await?;
    let stored = object_path(&vault, &seg)?;
    assert!(stored.is_file(), "{seg} is archived at {}", stored.display());
    let stored_bytes = std::fs::read(&stored)?;

    // Fetch restores the exact bytes PostgreSQL archived.
    let original = vault.archived_copy(&seg)?;
    assert_eq!(original.len(), 16 * 1024 * 1024, "a whole segment was archived");
    let work = vault.dir.subdir("work")?;
    let fetched = work.join("fetched");
    fetch_to(&vault, &seg, &fetched)?.check()?;
    assert!(
        std::fs::read(&fetched)? == original,
        "fetch returns the bytes PostgreSQL archived"
    );

    // Same content again: success, nothing changes; different content: exit 1, nothing overwritten.
    vault.check_duplicate_pushes(&seg, &original, &work).await?;
    let again = work.join(&seg);

    // A segment of another cluster is refused.
    let other_vault = Vault::new()?;
    let other = archiving_cluster(&install, &other_vault, ClusterOptions::default()).await?;
    let foreign_seg = other.archive_fresh_segment().await?;
    let foreign = work.join("foreign");
    fetch_to(&other_vault, &foreign_seg, &foreign)?.check()?;
    let renamed = work.join("000000010000000000000077");
    std::fs::create_dir_all(renamed.parent().context("parent")?)?;
    let bytes = std::fs::read(&foreign)?;
    write_postgres_file(&renamed, &bytes, 0o600)?;
    let out = vault.archive(["push", &renamed.display().to_string()])?;
    assert_eq!(out.code(), Some(1), "a foreign segment must be refused: {out}");
    assert!(
        out.stderr.contains("system identifier"),
        "the message names the system identifier: {out}"
    );
    assert!(
        !object_path(&vault, "000000010000000000000077")?.exists(),
        "nothing stored for a foreign segment"
    );
    drop(other);

    // Not a WAL file name: refused.
    let junk = work.join("notes.txt");
    write_postgres_file(&junk, b"hello", 0o600)?;
    let out = vault.archive(["push", &junk.display().to_string()])?;
    assert_eq!(out.code(), Some(1), "a non-WAL file must be refused: {out}");

    // Missing on fetch: quiet exit 1 (a .history of a timeline that never existed, too).
    for missing in ["0000000100000000000000FE", "00000009.history"] {
        let out = fetch_to(&vault, missing, &work.join("missing"))?;
        assert_eq!(out.code(), Some(1), "missing {missing}: {out}");
        assert!(out.stderr.trim().is_empty(), "missing files are quiet: {out}");
        assert!(!work.join("missing").exists());
    }

    // Wrong passphrase: loud, clear, and recovery-stopping (exit 126).
    let wrong_pass = vault.dir.join("wrong-passphrase");
    write_postgres_file(&wrong_pass, "not the right passphrase at all\n", 0o600)?;
    let wrong_cfg = vault.dir.join("wrong.toml");
    vault.write_config_to(&wrong_cfg, &cluster, &wrong_pass, "")?;
    let out = pgvault_tests::run_pgvault_archive(
        [
            "--config",
            &wrong_cfg.display().to_string(),
            "fetch",
            &seg,
            &work.join("x").display().to_string(),
        ],
        None,
    )?;
    assert_eq!(out.code(), Some(126), "wrong passphrase: {out}");
    assert!(
        out.stderr.contains("passphrase"),
        "the message names the passphrase: {out}"
    );

    // A flipped byte in the stored object.
    let mut flipped = stored_bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    write_postgres_file(&stored, &flipped, 0o600)?;
    let out = fetch_to(&vault, &seg, &work.join("flipped"))?;
    assert_eq!(out.code(), Some(126), "flipped byte: {out}");
    assert!(out.stderr.contains("corrupt"), "the message says corrupted: {out}");
    assert!(!work.join("flipped").exists(), "nothing half-written on failure");

    // A truncated stored object.
    write_postgres_file(&stored, &stored_bytes[..stored_bytes.len() - 100], 0o600)?;
    let out = fetch_to(&vault, &seg, &work.join("truncated"))?;
    assert_eq!(out.code(), Some(126), "truncated object: {out}");
    assert!(
        out.stderr.to_lowercase().contains("truncated") || out.stderr.contains("corrupt"),
        "clear message: {out}"
    );

    // A torn object (as a crash could leave) is repaired by the next push of the real file.
    write_postgres_file(&again, &original, 0o600)?;
    let out = vault.archive(["push", &again.display().to_string()])?;
    assert_eq!(out.code(), Some(0), "push over an unreadable object repairs it: {out}");
    fetch_to(&vault, &seg, &work.join("repaired"))?.check()?;
    assert!(
        std::fs::read(work.join("repaired"))? == original,
        "the repaired object holds the bytes PostgreSQL archived"
    );
    Ok(())
}
