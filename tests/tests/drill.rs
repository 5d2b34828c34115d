//! Restore drills on a real cluster (issue 8), PostgreSQL 15 and 18 (and the healthy step on 16):
//!
//! - a drill of a healthy repository passes: JSON with the backup, phase timings, RTO and RPO
//!   judged against `[objectives]`, the recovery check (reached the end of the archived WAL),
//!   amcheck, data checksums, and a true assertion and a count assertion; the report is stored in
//!   the repository; the default sandbox (under `[drill] sandbox_parent`) is gone afterwards;
//! - `--random` recovers to a point inside the recoverable window and passes;
//! - with `--keep`, the sandbox stays, and the server that ran in it was sealed: its
//!   `postmaster.opts` shows no TCP listener, a port that is not production's, the socket inside
//!   the sandbox and `archive_mode=off`;
//! - a false assertion fails the drill (exit 4) naming the assertion file;
//! - a flipped byte in a stored bundle fails the drill at restore (exit 4) naming the object;
//! - a missing WAL segment in the needed range fails the drill (exit 4) naming the segment;
//! - run as root, the sandbox server runs as `postgres` and the drill passes;
//! - on 16 (pgserver, no amcheck) a healthy drill passes with amcheck skipped, never "pass".

mod recovery_common;

use std::path::Path;

use anyhow::{ensure, Context, Result};
use pgvault_core::repository::layout;
use pgvault_tests::bins::default_cmd_timeout;
use pgvault_tests::{
    archiving_cluster, install_under_test, run_as_postgres, run_with_timeout, workspace_bin, write_postgres_file,
    ClusterOptions, CmdOutput, PgCluster, PgInstall, Vault, AMCHECK_EXCEPTIONS,
};
use recovery_common::*;
use serde_json::Value;

fn mkdir_postgres(dir: &Path) -> Result<()> {
    run_as_postgres(
        "mkdir",
        ["-p".as_ref(), dir.as_os_str()],
        std::time::Duration::from_secs(30),
    )?
    .check()?;
    Ok(())
}

fn drill(vault: &Vault, install: &PgInstall, args: &[&str]) -> Result<CmdOutput> {
    let bin = install.bin_dir().display().to_string();
    let mut all = vec!["drill", "--pg-bin", bin.as_str()];
    all.extend_from_slice(args);
    vault.pgvault(&all)
}

fn json(out: &CmdOutput) -> Result<Value> {
    serde_json::from_str(&out.stdout).with_context(|| format!("drill --json printed no JSON: {out}"))
}

fn check<'a>(report: &'a Value, name: &str) -> Result<&'a Value> {
    report["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .with_context(|| format!("no check {name} in {report:#}"))
}

async fn healthy(vault: &Vault, install: &PgInstall, c: &PgCluster, assertions: &Path) -> Result<()> {
    let parent = vault.dir.path().join("sandboxes");
    let out = drill(
        vault,
        install,
        &["--json", "--assertions", &assertions.display().to_string()],
    )?;
    ensure!(out.code() == Some(0), "a healthy drill passes: {out}");
    let r = json(&out)?;
    ensure!(r["passed"] == true, "{r:#}");
    ensure!(r["backup"].is_string() && r["pg_major"] == install.major(), "{r:#}");
    for t in ["restore", "wal_replay", "checks"] {
        ensure!(r["timings"][t].as_f64().is_some_and(|s| s > 0.0), "timing {t}: {r:#}");
    }
    ensure!(r["rto_seconds"].as_f64().is_some_and(|s| s > 0.0), "{r:#}");
    ensure!(r["rpo_basis"] == "last replayed commit", "{r:#}");
    ensure!(
        r["objectives"].as_array().map(Vec::len) == Some(2),
        "rto and rpo judged: {r:#}"
    );
    ensure!(r["bytes_restored"].as_u64().is_some_and(|b| b > 0), "{r:#}");
    ensure!(check(&r, "recovery")?["outcome"] == "pass", "{r:#}");
    let amcheck = if AMCHECK_EXCEPTIONS.iter().any(|e| e.0 == install.major()) {
        "skipped"
    } else {
        "pass"
    };
    ensure!(check(&r, "amcheck")?["outcome"] == amcheck, "{r:#}");
    ensure!(check(&r, "checksums")?["outcome"] == "pass", "{r:#}");
    ensure!(check(&r, "assertion a_rows.sql")?["outcome"] == "pass", "{r:#}");
    ensure!(check(&r, "assertion b_count.sql")?["outcome"] == "pass", "{r:#}");
    let left: Vec<_> = std::fs::read_dir(&parent)?.collect();
    ensure!(left.is_empty(), "the sandbox is removed: {left:?}");
    let stored = vault.raw_storage()?.list("drills").await?;
    ensure!(stored.len() == 1, "the report is stored in the repository: {stored:?}");
    let list = vault.list()?;
    ensure!(
        list["last_drill"]["passed"] == true && list["last_drill"]["id"] == r["id"],
        "list shows the last drill: {list:#}"
    );
    // The production cluster is untouched and still the only one on its port.
    ensure!(c.query_scalar::<i64>("SELECT count(*) FROM t").await? > 0);
    Ok(())
}

/// `--random`: a point inside the recoverable window, reached and promoted.
fn random_point(vault: &Vault, install: &PgInstall) -> Result<()> {
    let out = drill(vault, install, &["--random", "--json"])?;
    ensure!(out.code() == Some(0), "a drill to a random point passes: {out}");
    let r = json(&out)?;
    ensure!(
        r["random"] == true && r["target"].as_str().is_some_and(|t| t.starts_with("time ")),
        "{r:#}"
    );
    ensure!(check(&r, "recovery")?["outcome"] == "pass", "{r:#}");
    Ok(())
}

/// `--keep`: the sandbox stays; its server ran sealed off from production.
fn kept_and_sealed(vault: &Vault, install: &PgInstall, c: &PgCluster) -> Result<()> {
    let sb = vault.dir.path().join("kept");
    let out = drill(vault, install, &["--keep", "--sandbox", &sb.display().to_string()])?;
    ensure!(out.code() == Some(0), "{out}");
    ensure!(out.stdout.contains("PASSED") && out.stdout.contains("RTO"), "{out}");
    let opts = std::fs::read_to_string(sb.join("data/postmaster.opts")).context("postmaster.opts")?;
    // postmaster.opts holds the server's arguments, each in double quotes.
    ensure!(opts.contains("\"listen_addresses=\""), "no TCP listener: {opts}");
    ensure!(opts.contains("\"archive_mode=off\""), "{opts}");
    ensure!(opts.contains("\"port="), "{opts}");
    ensure!(
        !opts.contains(&format!("\"port={}\"", c.port())),
        "not production's port: {opts}"
    );
    let socket = format!("\"unix_socket_directories={}\"", sb.join("socket").display());
    ensure!(opts.contains(&socket), "socket inside the sandbox: {opts}");
    ensure!(
        !opts.contains(&c.socket_dir().display().to_string()),
        "never production's socket: {opts}"
    );
    ensure!(sb.join("server.log").is_file(), "the log is kept");
    Ok(())
}

fn false_assertion(vault: &Vault, install: &PgInstall, assertions: &Path) -> Result<()> {
    write_postgres_file(
        &assertions.join("zz_false.sql"),
        "-- expect: true\nSELECT count(*) = 0 FROM t;\n",
        0o644,
    )?;
    let out = drill(vault, install, &["--assertions", &assertions.display().to_string()])?;
    ensure!(out.code() == Some(4), "a false assertion fails the drill with 4: {out}");
    ensure!(
        out.stderr.contains("check assertion zz_false.sql failed") && out.stderr.contains("returned false"),
        "names the assertion: {out}"
    );
    std::fs::remove_file(assertions.join("zz_false.sql"))?;
    let list = vault.list()?;
    ensure!(
        list["last_drill"]["passed"] == false && list["last_drill"]["failures"].to_string().contains("zz_false.sql"),
        "list shows the failed drill and why: {list:#}"
    );
    Ok(())
}

/// A flipped byte in a stored bundle: the drill fails at restore (exit 4), naming the object;
/// the sandbox is removed. The bundle is put back afterwards.
fn corrupt_bundle(vault: &Vault, install: &PgInstall, id: &str) -> Result<()> {
    let key = layout::bundle_key(id, 0);
    let bundle = vault.repo.join(&key);
    let original = std::fs::read(&bundle).context("bundle 0")?;
    let mut bytes = original.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    write_postgres_file(&bundle, &bytes, 0o600)?;
    let sb = vault.dir.path().join("corrupt");
    let out = drill(vault, install, &["--sandbox", &sb.display().to_string()])?;
    write_postgres_file(&bundle, &original, 0o600)?;
    ensure!(out.code() == Some(4), "a corrupt backup fails the drill with 4: {out}");
    ensure!(
        out.stderr.contains("drill could not complete") && out.stderr.contains(&key),
        "names the corrupt object {key}: {out}"
    );
    ensure!(!sb.exists(), "the sandbox is removed after a failed drill");
    Ok(())
}

async fn missing_segment(vault: &Vault, install: &PgInstall, c: &PgCluster) -> Result<()> {
    insert_phase(c, "m1").await?;
    let missing = switch_and_archive(c).await?;
    insert_phase(c, "m2").await?;
    switch_and_archive(c).await?;
    remove_archived_segment(vault, &missing)?;
    let out = drill(vault, install, &["--json"])?;
    ensure!(out.code() == Some(4), "a missing segment fails the drill with 4: {out}");
    ensure!(
        out.stderr.contains(&missing),
        "names the missing segment {missing}: {out}"
    );
    let r = json(&out)?;
    ensure!(
        r["passed"] == false && r["error"].as_str().is_some_and(|e| e.contains(&missing)),
        "{r:#}"
    );
    Ok(())
}

/// Run as root (the test runs as root): the server runs as `postgres` through `runuser`, in a
/// sandbox given to it; a backup after the gap makes the end of the archive reachable again.
fn as_root(vault: &Vault, install: &PgInstall) -> Result<()> {
    if !nix_is_root() {
        return Ok(());
    }
    vault.backup(&[])?;
    let sb = vault.dir.path().join("root-sandbox");
    let mut cmd = std::process::Command::new(workspace_bin("pgvault"));
    cmd.arg("--config")
        .arg(&vault.config)
        .args(["drill", "--json", "--keep", "--pg-bin"])
        .arg(install.bin_dir())
        .arg("--sandbox")
        .arg(&sb);
    let out = run_with_timeout(&mut cmd, default_cmd_timeout())?;
    ensure!(out.code() == Some(0), "a drill run as root passes: {out}");
    let r = json(&out)?;
    ensure!(
        r["passed"] == true && check(&r, "recovery")?["outcome"] == "pass",
        "{r:#}"
    );
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(sb.join("data"))?);
    ensure!(owner != 0, "the sandbox belongs to postgres, not root");
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// The cluster, the drill configuration and two assertions; then `steps`.
async fn scenario(install: PgInstall, all_steps: bool) -> Result<()> {
    let vault = Vault::new()?;
    let c = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    let parent = vault.dir.path().join("sandboxes");
    mkdir_postgres(&parent)?;
    vault.write_config(
        &c,
        &format!(
            "\n[drill]\nsandbox_parent = \"{}\"\n\n[objectives]\nrto = \"30min\"\nrpo = \"30d\"\n",
            parent.display()
        ),
    )?;
    create_table(&c).await?;
    insert_phase(&c, "p1").await?;
    let id = vault.backup(&[])?;
    insert_phase(&c, "p2").await?;
    switch_and_archive(&c).await?;
    let assertions = vault.dir.path().join("assertions");
    mkdir_postgres(&assertions)?;
    write_postgres_file(
        &assertions.join("a_rows.sql"),
        "-- rows of both phases are back\nSELECT count(*) = 21 FROM t;\n",
        0o644,
    )?;
    write_postgres_file(
        &assertions.join("b_count.sql"),
        "-- database: postgres\n-- expect: count 10..10\nSELECT count(*) FROM t WHERE phase = 'p2';\n",
        0o644,
    )?;
    healthy(&vault, &install, &c, &assertions).await?;
    if !all_steps {
        return Ok(());
    }
    random_point(&vault, &install)?;
    kept_and_sealed(&vault, &install, &c)?;
    false_assertion(&vault, &install, &assertions)?;
    corrupt_bundle(&vault, &install, &id)?;
    missing_segment(&vault, &install, &c).await?;
    // Last: as root it writes its report into the repository as root.
    as_root(&vault, &install)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_pg15() {
    let Some(install) = install_under_test(15) else { return };
    scenario(install, true).await.unwrap_or_else(|e| panic!("{e:#}"));
}

/// PostgreSQL 16 (pgserver, no amcheck): the healthy drill passes with amcheck *skipped*, not passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_pg16_amcheck_skipped() {
    let Some(install) = install_under_test(16) else { return };
    scenario(install, false).await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_pg18() {
    let Some(install) = install_under_test(18) else { return };
    scenario(install, true).await.unwrap_or_else(|e| panic!("{e:#}"));
}
