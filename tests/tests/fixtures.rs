//! The committed format-v1 repository (`fixtures/v1/`, written by pgvault before format v2)
//! stays readable by today's binaries: `list` shows its backup, and restores at the backup
//! (`--target-immediate`) and to the end of its archive give exactly the rows its README
//! records. PostgreSQL 15 only: the fixture's cluster is 15.
//!
//! The repository is copied to a temporary directory first (given to `postgres`), so the
//! committed files are never written to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use pgvault_tests::{install_under_test, PgCluster, PgInstall, Vault};

/// The backup in `fixtures/v1/repo` and the rows its README promises.
const V1_BACKUP: &str = "20261201-213016F";
const V1_AT_BACKUP: &str = "1000 9d8d0c4fd8532ab746d46dd9260e52c4";
const V1_AT_END: &str = "1500 1e496049a30f05f4a51cf773e27f05d9";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/v1")
}

/// A vault holding a copy of the fixture repository and its passphrase, with a configuration
/// that needs no running server (restore and list never connect).
fn fixture_vault() -> Result<Vault> {
    let vault = Vault::new()?;
    let src = fixture_dir();
    pgvault_tests::copy_dir_for_postgres(&src.join("repo"), &vault.repo)?;
    let pass = std::fs::read(src.join("passphrase")).context("fixture passphrase")?;
    pgvault_tests::write_postgres_file(&vault.passphrase, pass, 0o600)?;
    let text = format!(
        "[postgres]\nhost = \"/nonexistent\"\nport = 5432\nuser = \"postgres\"\npgdata = \"/nonexistent/pgdata\"\n\n\
         [repository]\nurl = \"file://{}\"\n\n[encryption]\npassphrase_file = \"{}\"\n",
        vault.repo.display(),
        vault.passphrase.display()
    );
    pgvault_tests::write_postgres_file(&vault.config, text, 0o600)?;
    Ok(vault)
}

async fn digest(c: &PgCluster) -> Result<String> {
    c.query_scalar("SELECT count(*) || ' ' || md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM fixture").await
}

async fn restore_and_digest(install: &PgInstall, vault: &Vault, name: &str, args: &[&str]) -> Result<String> {
    let mut c = vault.restore(install, name, args, false)?;
    c.start()?;
    c.wait_for_recovery_end(Duration::from_secs(180)).await?;
    let d = digest(&c).await;
    c.stop()?;
    d.with_context(|| c.log_tail())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formatv2_v1_fixture_lists_and_restores() {
    let Some(install) = install_under_test(15) else { return };
    v1_inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn v1_inner(install: PgInstall) -> Result<()> {
    let vault = fixture_vault()?;
    let list = vault.list()?;
    let ids: Vec<&str> = list["backups"].as_array().context("backups[]")?.iter().filter_map(|b| b["id"].as_str()).collect();
    assert_eq!(ids, vec![V1_BACKUP], "the v1 backup is listed: {list}");

    let at_backup = restore_and_digest(&install, &vault, "at-backup", &["--target-immediate"]).await?;
    assert_eq!(at_backup, V1_AT_BACKUP, "rows at the backup");
    let at_end = restore_and_digest(&install, &vault, "at-end", &[]).await?;
    assert_eq!(at_end, V1_AT_END, "rows at the end of the archive");
    Ok(())
}
