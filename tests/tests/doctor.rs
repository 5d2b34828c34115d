//! `pgvault doctor` on PostgreSQL 15 (pgvault's own logic: one version), one server
//! reconfigured between the cases to keep the test short:
//! - healthy: data checksums, fsync, TLS with a generated certificate, localhost only,
//!   `peer`/`scram-sha-256` in pg_hba.conf, archiving through pgvault-archive, a fresh backup and
//!   a passed drill, memory sizes set to tune's advice (applied from doctor's own `fix_sql`):
//!   no warning, exit 0;
//! - broken on purpose: `trust` for 0.0.0.0/0, `md5` for ::/0, `listen_addresses = '*'`,
//!   archiving off, checksums disabled (`pg_checksums --disable`), `synchronous_commit = off`,
//!   roles `app`/`app` and `postgres`/`postgres` (SCRAM) and `legacy` with a default password
//!   (MD5), an inactive slot holding WAL: each problem found under its id, exit 4, no password
//!   in the output;
//! - the server stopped: exit 1.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use pgvault_tests::{
    archiving_cluster, install_under_test, run_as_postgres, write_postgres_file, ClusterOptions, CmdOutput, PgCluster,
    PgInstall, TestCerts, Vault,
};
use serde_json::Value;

/// The machine tune's advice is asked for, fixed so the test does not depend on the host.
const MACHINE: [&str; 4] = ["--memory", "1GB", "--cpus", "2"];

fn doctor(vault: &Vault, extra: &[&str]) -> Result<(CmdOutput, Value)> {
    let mut args = vec!["doctor", "--json"];
    args.extend_from_slice(&MACHINE);
    args.extend_from_slice(extra);
    let out = vault.pgvault(&args)?;
    let json: Value =
        serde_json::from_str(&out.stdout).with_context(|| format!("doctor --json printed no JSON: {out}"))?;
    Ok((out, json))
}

fn findings(json: &Value) -> Vec<Value> {
    json["findings"].as_array().cloned().unwrap_or_default()
}

fn with_id<'a>(all: &'a [Value], id: &str) -> Vec<&'a Value> {
    all.iter().filter(|f| f["id"] == id).collect()
}

fn write_hba(c: &PgCluster, lines: &[&str]) -> Result<()> {
    write_postgres_file(&c.data_dir().join("pg_hba.conf"), lines.join("\n") + "\n", 0o600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_each_planted_problem_and_passes_a_healthy_cluster() {
    let Some(install) = install_under_test(15) else { return };
    inner(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn inner(install: PgInstall) -> Result<()> {
    ensure!(
        install.has_openssl(),
        "PostgreSQL 15 without OpenSSL cannot run the TLS case"
    );
    let vault = Vault::new()?;
    let certs = TestCerts::generate()?;
    let opts = certs.cluster_options(ClusterOptions::default().fsync(true));
    let mut c = archiving_cluster(&install, &vault, opts).await?;
    healthy(&vault, &install, &mut c).await?;
    broken(&vault, &install, &mut c).await?;

    c.stop()?;
    let out = vault.pgvault(["doctor"])?;
    ensure!(out.code() == Some(1), "an unreachable server is exit 1: {out}");
    ensure!(out.stderr.contains("cannot reach PostgreSQL"), "says why: {out}");
    Ok(())
}

async fn healthy(vault: &Vault, install: &PgInstall, c: &mut PgCluster) -> Result<()> {
    // Memory sizes as tune advises for the stated machine, from doctor's own fix statements.
    let (_, json) = doctor(vault, &[])?;
    let advice = findings(&json);
    let advice = with_id(&advice, "resources.far_from_advice");
    for f in &advice {
        let sql = f["fix_sql"].as_str().with_context(|| format!("no fix_sql in {f}"))?;
        c.execute(sql).await?;
    }
    if !advice.is_empty() {
        c.restart()?;
    }
    c.execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await?;
    vault.backup(&[])?;
    let bin = install.bin_dir().display().to_string();
    let out = vault.pgvault(["drill", "--pg-bin", bin.as_str()])?;
    ensure!(out.code() == Some(0), "the drill passes: {out}");

    // From here on only `postgres` (the OS user pgvault runs as) gets in over the socket.
    write_hba(
        c,
        &[
            "local   all          postgres                peer",
            "local   replication  postgres                peer",
            "local   all          all                     scram-sha-256",
            "hostssl all          all       127.0.0.1/32  scram-sha-256",
            "hostssl replication  all       127.0.0.1/32  scram-sha-256",
        ],
    )?;
    c.reload()?;
    let (out, json) = doctor(vault, &[])?;
    let all = findings(&json);
    let above: Vec<_> = all.iter().filter(|f| f["severity"] != "info").collect();
    ensure!(above.is_empty(), "a healthy cluster gets no warning: {above:#?}\n{out}");
    ensure!(out.code() == Some(0), "exit 0: {out}");
    ensure!(json["summary"]["exit_code"] == 0, "summary: {json:#}");

    let human = vault.pgvault(["doctor", MACHINE[0], MACHINE[1], MACHINE[2], MACHINE[3]])?;
    ensure!(
        human.code() == Some(0) && human.stdout.contains("0 critical, 0 warning(s)"),
        "{human}"
    );
    Ok(())
}

async fn broken(vault: &Vault, install: &PgInstall, c: &mut PgCluster) -> Result<()> {
    c.stop()?;
    let data = c.data_dir().display().to_string();
    run_as_postgres(
        install.bin("pg_checksums"),
        ["--disable", "-D", data.as_str()],
        Duration::from_secs(120),
    )?
    .check()
    .context("pg_checksums --disable")?;
    let conf = c.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf)?;
    text.push_str("archive_mode = off\nsynchronous_commit = off\n");
    write_postgres_file(&conf, text, 0o600)?;
    // The wide lines name a database and role that do not exist, and the superuser line a
    // documentation range (TEST-NET-1): planted, but nobody can use them while the test runs.
    write_hba(
        c,
        &[
            "local   all          all                     trust",
            "local   replication  all                     trust",
            "host    nosuchdb     nobody    0.0.0.0/0     trust",
            "host    nosuchdb     nobody    ::/0          md5",
            "host    all          all       192.0.2.0/24  scram-sha-256",
        ],
    )?;
    start_listening_everywhere(install, c)?;
    c.execute(
        "CREATE ROLE app LOGIN PASSWORD 'app'; ALTER ROLE postgres PASSWORD 'postgres'; \
         SET password_encryption = 'md5'; CREATE ROLE legacy LOGIN PASSWORD 'changeme'; \
         SELECT pg_create_physical_replication_slot('stale', true); INSERT INTO t SELECT generate_series(1, 1000)",
    )
    .await?;
    c.switch_wal().await?;

    let (out, json) = doctor(vault, &[])?;
    ensure!(out.code() == Some(4), "critical findings are exit 4: {out}");
    let all = findings(&json);
    let expect = [
        ("security.hba_trust", "critical", "0.0.0.0/0"),
        ("security.hba_trust_local", "warning", "local"),
        ("security.hba_md5", "warning", "::/0"),
        ("security.hba_broad_range", "warning", "0.0.0.0/0"),
        ("security.superuser_remote", "warning", "192.0.2.0/24"),
        ("security.listen_all", "warning", "listen_addresses = '*'"),
        ("backup.archive_command_not_pgvault", "absent", ""),
        ("security.md5_verifier", "warning", "legacy"),
        ("backup.archive_mode_off", "critical", "archive_mode = off"),
        ("reliability.data_checksums_off", "warning", "data_checksums = off"),
        (
            "reliability.synchronous_commit_off",
            "warning",
            "synchronous_commit = off",
        ),
        ("backup.inactive_slot", "warning", "stale"),
    ];
    for (id, severity, evidence) in expect {
        let hits = with_id(&all, id);
        if severity == "absent" {
            ensure!(hits.is_empty(), "{id} is not reported when archiving is off: {hits:#?}");
            continue;
        }
        let Some(f) = hits.first() else {
            bail!("{id} not found: {all:#?}");
        };
        ensure!(f["severity"] == severity, "{id} is {severity}: {f}");
        ensure!(
            hits.iter()
                .any(|f| f["evidence"].as_str().unwrap_or("").contains(evidence)),
            "{id} evidence mentions {evidence}: {hits:#?}"
        );
        ensure!(f["fix"].as_str().is_some_and(|s| !s.is_empty()), "{id} has a fix: {f}");
    }
    let weak: Vec<&str> = with_id(&all, "security.weak_password")
        .iter()
        .filter_map(|f| f["evidence"].as_str())
        .collect();
    for line in [
        "role app has a password equal to its name",
        "role postgres has a password equal to its name",
        "role legacy has a well-known default password",
    ] {
        ensure!(weak.contains(&line), "weak password '{line}' found: {weak:?}");
    }
    ensure!(!out.stdout.contains("changeme"), "no password in the output: {out}");
    ensure!(
        json["summary"]["exit_code"] == 4 && json["summary"]["worst"] == "critical",
        "{json:#}"
    );

    let human = vault.pgvault(["doctor", MACHINE[0], MACHINE[1], MACHINE[2], MACHINE[3]])?;
    ensure!(human.code() == Some(4), "human output, same status: {human}");
    let crit = human.stdout.find("CRITICAL").context("a CRITICAL group")?;
    let warn = human.stdout.find("WARNING").context("a WARNING group")?;
    ensure!(crit < warn, "worst first: {human}");
    ensure!(
        human.stdout.contains("[security.hba_trust]") && !human.stdout.contains("changeme"),
        "{human}"
    );
    Ok(())
}

/// Starts the stopped cluster with `listen_addresses = '*'` (the harness always starts on
/// 127.0.0.1, from the command line, which wins over postgresql.conf); `PgCluster::stop` stops
/// it as usual.
fn start_listening_everywhere(install: &PgInstall, c: &PgCluster) -> Result<()> {
    let data = c.data_dir().display().to_string();
    let log = c.log_path().display().to_string();
    run_as_postgres(
        install.bin("pg_ctl"),
        [
            "start",
            "-w",
            "-D",
            data.as_str(),
            "-l",
            log.as_str(),
            "-o",
            "-c listen_addresses='*'",
        ],
        Duration::from_secs(120),
    )?
    .check()
    .with_context(|| format!("pg_ctl start with listen_addresses '*': {}", c.log_tail()))?;
    Ok(())
}
