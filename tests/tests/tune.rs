//! `pgvault tune` against a real PostgreSQL 15 (pgvault's own logic: one version): `--diff`
//! reads the server's `pg_settings` and names only what differs (the harness's defaults:
//! `shared_buffers` as initdb chose it, no archiving), with the RPO from `[objectives]`; the conf output, included from `postgresql.conf`, is
//! read whole; `--format sql` is
//! accepted by the server statement by statement (`ALTER SYSTEM`, `pg_reload_conf()`, no error
//! in `pg_file_settings`); after a restart the diff is empty, so the comparison of units
//! (`8kB` pages, `MB`, `s`) agrees with the server's.

use anyhow::{ensure, Context, Result};
use pgvault_tests::{install_under_test, write_postgres_file, ClusterOptions, PgCluster, PgInstall, Vault};
use serde_json::Value;

/// The machine tune is told about: 1GB, 2 CPUs (shared_buffers 256MB: differs from 128MB).
const MACHINE: [&str; 4] = ["--memory", "1GB", "--cpus", "2"];

fn tune(vault: &Vault, extra: &[&str]) -> Result<String> {
    let mut args = vec!["tune"];
    args.extend_from_slice(&MACHINE);
    args.extend_from_slice(extra);
    let out = vault.pgvault(&args)?;
    ensure!(out.success(), "pgvault tune {extra:?} failed: {out}");
    Ok(out.stdout)
}

fn diff_names(json: &Value) -> Vec<String> {
    json["diff"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["name"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_and_sql_against_a_running_server() {
    let Some(install) = install_under_test(15) else { return };
    scenario(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn scenario(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let opts = ClusterOptions {
        archive_mode: false,
        ..ClusterOptions::default()
    };
    let mut cluster = PgCluster::start_new(&install, opts)?;
    vault.write_config(&cluster, "\n[objectives]\nrpo = \"10min\"\n")?;

    // --diff: the server's version, the differing settings with their current values.
    let json: Value = serde_json::from_str(&tune(&vault, &["--diff", "--format", "json"])?)
        .context("tune --diff --format json printed no JSON")?;
    ensure!(
        json["inputs"]["server_major"] == 15,
        "server version not read: {}",
        json["inputs"]
    );
    let names = diff_names(&json);
    for expected in [
        "shared_buffers",
        "archive_mode",
        "archive_command",
        "archive_timeout",
        "work_mem",
    ] {
        ensure!(
            names.iter().any(|n| n == expected),
            "{expected} missing from the diff {names:?}"
        );
    }
    // Already right on 15 by default or by the harness: not reported.
    for same in [
        "checkpoint_completion_target",
        "max_wal_senders",
        "wal_level",
        "default_statistics_target",
    ] {
        ensure!(
            !names.iter().any(|n| n == same),
            "{same} reported though equal: {names:?}"
        );
    }
    let sb = json["diff"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == "shared_buffers"))
        .context("shared_buffers diff")?;
    // initdb picks the current value from what the machine allows (128MB or less).
    ensure!(
        sb["recommended"] == "256MB" && sb["current"] != "256MB",
        "shared_buffers diff: {sb}"
    );
    // The RPO came from [objectives] rpo = 10min: archive_timeout is half of it.
    let at = json["settings"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "archive_timeout"))
        .context("archive_timeout")?;
    ensure!(at["value"] == "5min", "archive_timeout from the RPO: {at}");
    ensure!(
        json["settings"]
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["name"] != "summarize_wal")),
        "summarize_wal on 15"
    );
    let text = tune(&vault, &["--diff"])?;
    ensure!(
        text.contains("shared_buffers") && text.contains("→ 256MB"),
        "diff text: {text}"
    );

    // The conf include file (what `deploy` installs): PostgreSQL reads every line of it.
    let conf = tune(&vault, &["--pg-version", "15"])?;
    let include = cluster.data_dir().join("pgvault-tune.conf");
    write_postgres_file(&include, &conf, 0o600)?;
    let main_conf = cluster.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&main_conf)?;
    text.push_str("include 'pgvault-tune.conf'\n");
    write_postgres_file(&main_conf, text, 0o600)?;
    cluster.reload()?;
    let read: i64 = cluster
        .query_scalar("SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%pgvault-tune.conf'")
        .await?;
    let settings = json["settings"].as_array().context("settings")?.len() as i64;
    ensure!(
        read == settings,
        "PostgreSQL read {read} of the {settings} settings in the include file"
    );
    file_settings_ok(&cluster, &json).await?;

    // --format sql: every statement accepted.
    let sql = tune(&vault, &["--format", "sql", "--pg-version", "15"])?;
    let client = cluster.client().await?;
    let mut applied = 0;
    for line in sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
    {
        client
            .batch_execute(line)
            .await
            .with_context(|| format!("the server refused `{line}`"))?;
        applied += 1;
    }
    ensure!(applied > 20, "only {applied} statements in {sql}");
    file_settings_ok(&cluster, &json).await?;

    // After a restart every recommendation is in effect: the diff is empty.
    drop(client);
    cluster.restart()?;
    let json: Value = serde_json::from_str(&tune(&vault, &["--diff", "--format", "json"])?)?;
    ensure!(
        diff_names(&json).is_empty(),
        "still differs after applying: {}",
        json["diff"]
    );
    let text = tune(&vault, &["--diff"])?;
    ensure!(text.contains("already has all"), "diff text after applying: {text}");
    Ok(())
}

/// Only "setting could not be applied" (a restart is needed) may be in `pg_file_settings`, and
/// only for the settings tune marks (restart).
async fn file_settings_ok(cluster: &PgCluster, json: &Value) -> Result<()> {
    let client = cluster.client().await?;
    let rows = client
        .query("SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL", &[])
        .await?;
    let restart: Vec<&str> = json["settings"]
        .as_array()
        .context("settings")?
        .iter()
        .filter(|s| s["restart"] == true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    for row in &rows {
        let (name, error): (String, String) = (row.get(0), row.get(1));
        ensure!(
            error == "setting could not be applied" && restart.contains(&name.as_str()),
            "{name}: {error} after the reload"
        );
    }
    Ok(())
}

/// Bad flag values exit 2 with a message naming the value; no server or configuration needed.
#[test]
fn bad_values_are_usage_errors() {
    for (args, says) in [
        (vec!["tune", "--storage", "tape"], "unknown storage 'tape'"),
        (vec!["tune", "--workload", "batch"], "unknown workload 'batch'"),
        (vec!["tune", "--memory", "32XB"], "unit 'XB'"),
        (
            vec!["tune", "--memory", "100MB", "--cpus", "2"],
            "memory must be at least 256MB",
        ),
        (vec!["tune", "--cpus", "0"], "0 is not in 1..=4096"),
        (vec!["tune", "--format", "yaml"], "unknown format 'yaml'"),
        (vec!["tune", "--rpo", "5"], "no unit"),
    ] {
        let out = pgvault_tests::run_pgvault(&args, None).expect("run pgvault");
        assert_eq!(out.code(), Some(2), "{args:?}: {out}");
        assert!(out.stderr.contains(says), "{args:?} does not say {says:?}: {out}");
    }
}
