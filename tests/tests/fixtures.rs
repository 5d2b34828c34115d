//! Every repository format pgvault ever wrote stays readable: `fixtures/v<N>/` holds a small
//! repository of each format version, written by the pgvault of its time, with its passphrase and
//! the rows its README records. [`FIXTURES`] lists them; for each, today's binaries list it
//! (the backup, the format version, a recoverable window) and restore it to every point the
//! README records (at the backup with `--target-immediate`, at a restore point where the format
//! records them, at the end of the archive), checking the rows. A fixture with a backup index
//! also has that index corrupted: listing rebuilds it, never fails; one without is upgraded, and
//! the next listing writes one. PostgreSQL 15 only: the
//! fixtures' clusters are 15. Adding a format version is one entry in [`FIXTURES`].
//!
//! Each repository is copied to a temporary directory first (given to `postgres`), so the
//! committed files are never written to.
//!
//! `formatv2_new_repository_is_identity_bound`: a repository made by today's `init` writes
//! format-v2 objects; a WAL object copied under another timeline's segment name, or under a
//! `.history` name, is refused by `pgvault-archive fetch` (not "not found", which would let
//! PostgreSQL promote early); the backup restores with every row.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pgvault_tests::{archiving_cluster, install_under_test, ClusterOptions, PgCluster, PgInstall, Vault};

/// One committed fixture repository and what its README promises.
struct Fixture {
    /// The repository format version (`fixtures/v<version>/`).
    version: u32,
    /// The one backup in it.
    backup: &'static str,
    /// Whether it holds a backup index (`index/backups`, format v2 on).
    index: bool,
    /// Restores to check: (name, restore arguments, expected `count md5` digest).
    restores: &'static [(&'static str, &'static [&'static str], &'static str)],
}

/// Every format version ever written. A new format version adds its fixture here.
const FIXTURES: &[Fixture] = &[
    Fixture {
        version: 1,
        backup: "20261201-213016F",
        index: false,
        restores: &[
            (
                "at-backup",
                &["--target-immediate"],
                "1000 9d8d0c4fd8532ab746d46dd9260e52c4",
            ),
            ("at-end", &[], "1500 1e496049a30f05f4a51cf773e27f05d9"),
        ],
    },
    Fixture {
        version: 2,
        backup: "20261202-005215F",
        index: true,
        restores: &[
            (
                "at-backup",
                &["--target-immediate"],
                "1000 9d8d0c4fd8532ab746d46dd9260e52c4",
            ),
            (
                "at-name",
                &["--target-name", "fixture-v2"],
                "1500 1e496049a30f05f4a51cf773e27f05d9",
            ),
            ("at-end", &[], "2000 bcb7add837e768e14b3af895a9e0e3d9"),
        ],
    },
];

fn fixture_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/v{version}"))
}

/// A vault holding a copy of fixture `version`'s repository and its passphrase, with a
/// configuration that needs no running server (restore and list never connect).
fn fixture_vault(version: u32) -> Result<Vault> {
    let vault = Vault::new()?;
    let src = fixture_dir(version);
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
    c.query_scalar("SELECT count(*) || ' ' || md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM fixture")
        .await
}

async fn restore_and_digest(install: &PgInstall, vault: &Vault, name: &str, args: &[&str]) -> Result<String> {
    let mut c = vault.restore(install, name, args, false)?;
    c.start()?;
    c.wait_for_recovery_end(Duration::from_secs(180)).await?;
    let d = digest(&c).await;
    c.stop()?;
    d.with_context(|| c.log_tail())
}

/// Lists a copy of `f` and checks what it shows.
fn check_list(f: &Fixture, vault: &Vault) -> Result<()> {
    let list = vault.list()?;
    let ids: Vec<&str> = list["backups"]
        .as_array()
        .context("backups[]")?
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    ensure!(ids == vec![f.backup], "v{}: the backup is listed: {list}", f.version);
    ensure!(
        list["format_version"] == f.version,
        "v{}: the format version: {list}",
        f.version
    );
    ensure!(
        list["recoverable_window"]["to_lsn"].is_string(),
        "v{}: a recoverable window is shown: {list}",
        f.version
    );
    Ok(())
}

/// A fixture's backup index, corrupted, is rebuilt by the next listing.
fn check_index_rebuilt(f: &Fixture, vault: &Vault) -> Result<()> {
    let index = vault.repo.join("index").join("backups");
    ensure!(index.is_file(), "v{}: the fixture holds a backup index", f.version);
    let garbage = b"not a sealed object".to_vec();
    pgvault_tests::write_postgres_file(&index, garbage.clone(), 0o600)?;
    check_list(f, vault)?;
    let rebuilt = std::fs::read(&index)?;
    ensure!(
        rebuilt != garbage && rebuilt.starts_with(b"PGVAULT"),
        "v{}: the index was rebuilt",
        f.version
    );
    Ok(())
}

/// `verify` finds the fixture whole, and `expire` on the copy (one backup, kept by any policy)
/// runs, keeps it and leaves a repository that still lists it.
fn check_verify_and_expire(f: &Fixture, vault: &Vault) -> Result<()> {
    let out = vault.pgvault(["verify", "--json"])?.check()?;
    let report: serde_json::Value = serde_json::from_str(&out.stdout).context("verify --json")?;
    ensure!(
        report["whole"] == true,
        "v{}: verify finds the fixture whole: {report}",
        f.version
    );
    let out = vault.pgvault(["expire", "--keep-full", "1", "--json"])?.check()?;
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).context("expire --json")?;
    ensure!(
        plan["delete_backups"].as_array().is_some_and(Vec::is_empty) && plan["keep"][0]["id"] == f.backup,
        "v{}: expire keeps the only backup: {plan}",
        f.version
    );
    check_list(f, vault)
}

async fn check_fixture(install: &PgInstall, f: &Fixture) -> Result<()> {
    let vault = fixture_vault(f.version)?;
    check_list(f, &vault)?;
    check_verify_and_expire(f, &vault)?;
    if f.index {
        check_index_rebuilt(f, &vault)?;
    }
    for (name, args, expected) in f.restores {
        let got = restore_and_digest(install, &vault, name, args)
            .await
            .with_context(|| format!("v{}: restore {name}", f.version))?;
        ensure!(
            got == *expected,
            "v{}: rows at {name}: got {got}, expected {expected}",
            f.version
        );
    }
    if !f.index {
        // Upgraded to the newest format, the repository gains a backup index at the next listing.
        vault.pgvault(["upgrade"])?.check()?;
        let list = vault.list()?;
        ensure!(
            list["backups"][0]["id"] == f.backup && list["backups"].as_array().map(Vec::len) == Some(1),
            "v{}: listed after upgrade: {list}",
            f.version
        );
        ensure!(
            vault.repo.join("index").join("backups").is_file(),
            "v{}: after upgrade, listing wrote the backup index",
            f.version
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formatv2_every_format_fixture_lists_and_restores() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    for f in FIXTURES {
        check_fixture(&install, f).await.unwrap_or_else(|e| panic!("{e:#}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formatv2_new_repository_is_identity_bound() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    v2_inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn v2_inner(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    cluster
        .execute("CREATE TABLE fixture AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1,300) g")
        .await?;
    let id = vault.backup(&[])?;
    cluster
        .execute("INSERT INTO fixture SELECT g, md5(g::text) FROM generate_series(301,600) g")
        .await?;
    let expected = digest(&cluster).await?;
    let last = cluster.switch_wal().await?;
    cluster.wait_for_archived(&last, Duration::from_secs(60)).await?;

    let descriptor: serde_json::Value = serde_json::from_slice(&std::fs::read(vault.repo.join("pgvault.repo"))?)?;
    assert_eq!(
        descriptor["format_version"], 2,
        "a new repository writes format 2: {descriptor}"
    );
    let wal_path = vault.repo.join("wal").join(&last[..16]).join(&last);
    let sealed = std::fs::read(&wal_path).with_context(|| wal_path.display().to_string())?;
    assert_eq!(&sealed[..8], b"PGVAULT\x02", "WAL objects are v2");
    let catalog = std::fs::read(vault.repo.join("backups").join(&id).join("catalog"))?;
    assert_eq!(&catalog[..8], b"PGVAULT\x02", "catalogs are v2");

    // The same sealed bytes under timeline 2's name for that segment, and as a history file.
    let tli2 = format!("00000002{}", &last[8..]);
    for name in [tli2.as_str(), "00000002.history"] {
        let dir = if name.ends_with(".history") {
            vault.repo.join("wal")
        } else {
            vault.repo.join("wal").join(&name[..16])
        };
        std::fs::create_dir_all(&dir)?;
        pgvault_tests::chown_to_postgres(&dir)?;
        pgvault_tests::write_postgres_file(&dir.join(name), &sealed, 0o600)?;
        let dest = vault.dir.join(format!("fetched-{name}"));
        let out = vault.archive(["fetch", name, &dest.display().to_string()])?;
        assert!(
            !out.success() && out.code() != Some(1),
            "a swapped object is an error, not 'not found': {out}"
        );
        assert!(
            out.stderr.contains("moved or swapped"),
            "the message says what happened: {out}"
        );
        assert!(!dest.exists(), "nothing was written");
        std::fs::remove_file(dir.join(name))?;
    }

    drop(cluster);
    let restored = restore_and_digest(&install, &vault, "restored", &[]).await?;
    assert_eq!(restored, expected, "every row comes back from a v2 repository");
    Ok(())
}
