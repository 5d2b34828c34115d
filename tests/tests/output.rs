//! Output conventions (issue 9 item 3, docs/COMMANDS.md) on a real cluster (PostgreSQL 15):
//! a backup under a pseudo terminal (`script` from util-linux) draws a bar with throughput and
//! time left, with `-v` log lines around it; the same backup without a terminal (as cron runs it) prints only its result line
//! on stdout and nothing on stderr; `--log-format json` writes one JSON object per stderr line;
//! every read command's `--json` parses, with the documented top-level fields; usage errors exit 2.

use anyhow::{ensure, Context, Result};
use pgvault_tests::bins::default_cmd_timeout;
use pgvault_tests::{
    archiving_cluster, install_under_test, postgres_command, run_pgvault, run_pgvault_archive, run_with_timeout,
    workspace_bin, ClusterOptions, CmdOutput, Vault,
};
use serde_json::Value;

/// Table data the bar-test backup streams: enough that the server's once-a-second progress
/// reports arrive several times while the backup runs.
const BULK_MIB: u32 = 256;

fn json_of(out: &CmdOutput) -> Result<Value> {
    serde_json::from_str(&out.stdout).with_context(|| format!("not one JSON document: {out}"))
}

/// `fields` are all top-level keys of `v` (`what` names the command in messages).
fn has_fields(v: &Value, what: &str, fields: &[&str]) -> Result<()> {
    let obj = v
        .as_object()
        .with_context(|| format!("{what}: not a JSON object: {v}"))?;
    for f in fields {
        ensure!(obj.contains_key(*f), "{what} --json has no top-level \"{f}\": {v:#}");
    }
    Ok(())
}

/// `text` without ANSI escape sequences (CSI `ESC [ … letter`) and carriage returns.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for n in chars.by_ref() {
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(if c == '\r' { '\n' } else { c });
    }
    out
}

/// Whether a bar line shows a rate (`12.3MB/s`) and a known time left (`eta 4s`).
fn bar_line_has_rate_and_eta(line: &str) -> bool {
    let rate = line.split_whitespace().any(|w| {
        w.strip_suffix("/s")
            .and_then(|s| s.strip_suffix(['B']).map(|s| s.trim_end_matches(['k', 'M', 'G', 'T'])))
            .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok_and(|r| r > 0.0))
    });
    let eta = line
        .split_once("eta ")
        .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()));
    rate && eta
}

/// `pgvault --config … args` under a pseudo terminal 120 columns wide: stdout and stderr both
/// arrive, merged, on `script`'s stdout.
fn pgvault_on_terminal(vault: &Vault, args: &str) -> Result<CmdOutput> {
    let line = format!(
        "stty cols 120 rows 40; {} --config {} {args}",
        workspace_bin("pgvault").display(),
        vault.config.display()
    );
    let mut cmd = postgres_command("script");
    cmd.args(["-qfec", &line, "/dev/null"]);
    run_with_timeout(&mut cmd, default_cmd_timeout())
}

async fn scenario(install: pgvault_tests::PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    cluster
        .execute(&format!(
            "CREATE TABLE bulk AS SELECT g, repeat(md5(g::text), 30) AS pad \
             FROM generate_series(1, {BULK_MIB} * 1024 * 1024 / 1000) g"
        ))
        .await?;
    cluster.execute("CHECKPOINT").await?;

    // On a terminal: a bar with throughput and ETA, then the result line; log lines (-v) are
    // written around the bar, each on a line of its own.
    let tty = pgvault_on_terminal(&vault, "-v backup")?;
    ensure!(tty.success(), "backup on a terminal failed: {tty}");
    let screen = strip_ansi(&tty.stdout);
    ensure!(
        screen.lines().any(bar_line_has_rate_and_eta),
        "no bar line with a rate (e.g. 12.3MB/s) and an ETA (eta 4s) on the terminal, took {:?}:\n{screen}",
        tty.elapsed
    );
    ensure!(
        screen
            .lines()
            .any(|l| l.starts_with("backup ") && l.contains(" complete: ")),
        "the result line follows the bar:\n{screen}"
    );
    let with_bar = screen
        .lines()
        .find(|l| bar_line_has_rate_and_eta(l))
        .unwrap_or_default();
    eprintln!("bar on a terminal ({:?}): {with_bar}", tty.elapsed);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // Without a terminal (cron, systemd, a pipe): the result line only, nothing on stderr.
    let quiet = vault.pgvault(["backup"])?.check()?;
    let lines: Vec<&str> = quiet.stdout.lines().collect();
    ensure!(
        lines.len() == 1,
        "one result line on stdout without a terminal: {quiet}"
    );
    ensure!(
        lines[0].starts_with("backup ") && lines[0].contains(" complete: ") && lines[0].contains("/s)"),
        "the result line gives the id, size, time and rate: {quiet}"
    );
    ensure!(
        quiet.stderr.is_empty(),
        "nothing on stderr at the default log level: {quiet}"
    );
    ensure!(
        !quiet.stdout.contains('\u{1b}'),
        "no escape sequences without a terminal: {quiet}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // JSON logs: every stderr line one JSON object with timestamp, level and message.
    let logged = vault
        .pgvault(["--log-format", "json", "--log-level", "debug", "backup", "--json"])?
        .check()?;
    let log_lines: Vec<&str> = logged.stderr.lines().collect();
    ensure!(!log_lines.is_empty(), "debug logging says something: {logged}");
    for l in &log_lines {
        let v: Value = serde_json::from_str(l).with_context(|| format!("log line is not JSON: {l}"))?;
        has_fields(&v, "a JSON log line", &["timestamp", "level", "message"])?;
    }
    let made = json_of(&logged)?;
    has_fields(
        &made,
        "backup",
        &[
            "id",
            "kind",
            "timeline",
            "start_lsn",
            "stop_lsn",
            "start_time",
            "stop_time",
            "size",
            "stored_size",
            "files",
            "duration_seconds",
        ],
    )?;
    ensure!(
        made["size"].as_u64().is_some_and(|s| s > u64::from(BULK_MIB) << 20),
        "size in bytes: {made}"
    );
    let id = made["id"].as_str().context("backup id")?.to_string();
    // Errors, too, are JSON lines in that format.
    let failed = vault.pgvault([
        "--log-format",
        "json",
        "restore",
        "--pgdata",
        "/nonexistent/x",
        "--backup",
        "nosuch",
        "--dry-run",
    ])?;
    ensure!(
        failed.code() == Some(1),
        "an unknown backup is an error (exit 1): {failed}"
    );
    for l in failed.stderr.lines() {
        let v: Value = serde_json::from_str(l).with_context(|| format!("error line is not JSON: {l}"))?;
        ensure!(v["level"] == "ERROR" || v["level"] == "WARN", "{v}");
    }

    read_commands_json(&vault, &id)?;

    // copy --dry-run --json: the plan of a copy into an empty second repository.
    let target = Vault::new()?;
    target.write_config(&cluster, "")?;
    let copy = vault
        .pgvault([
            "copy",
            "--to",
            &target.config.display().to_string(),
            "--dry-run",
            "--json",
        ])?
        .check()?;
    let copy = json_of(&copy)?;
    has_fields(
        &copy,
        "copy --dry-run",
        &[
            "source",
            "target",
            "dry_run",
            "backups_copied",
            "bytes_copied",
            "plan",
            "duration_seconds",
        ],
    )?;
    ensure!(
        copy["dry_run"] == true
            && copy["plan"]
                .as_array()
                .is_some_and(|p| p.iter().filter(|i| i["kind"] == "backup").count() == 3),
        "the plan names the three backups: {copy:#}"
    );
    Ok(())
}

/// `--json` of the read commands: one JSON document each, with the fields docs/COMMANDS.md lists.
fn read_commands_json(vault: &Vault, id: &str) -> Result<()> {
    let run = |args: &[&str]| -> Result<Value> { json_of(&vault.pgvault(args)?.check()?) };
    let list = run(&["list", "--json"])?;
    has_fields(
        &list,
        "list",
        &[
            "repository",
            "backups",
            "wal",
            "gaps",
            "windows",
            "recoverable_window",
            "last_drill",
        ],
    )?;
    ensure!(
        list["backups"].as_array().is_some_and(|b| b.len() == 3),
        "three backups: {list:#}"
    );
    has_fields(
        &list["backups"][0],
        "list backups[0]",
        &["id", "size", "start_time", "pin", "retention"],
    )?;
    let info = run(&["info", "--json"])?;
    has_fields(
        &info,
        "info",
        &[
            "repository",
            "repository_id",
            "format_version",
            "system_identifier",
            "encrypted",
            "compression",
        ],
    )?;
    let verify = run(&["verify", "--json"])?;
    has_fields(
        &verify,
        "verify",
        &[
            "repository",
            "whole",
            "findings",
            "backups",
            "timelines",
            "counts",
            "duration_seconds",
        ],
    )?;
    ensure!(verify["whole"] == true, "the repository is whole: {verify:#}");
    let check = run(&["check", "--json"])?;
    has_fields(
        &check,
        "check",
        &["ok", "segment", "switch_lsn", "waited_seconds", "repository"],
    )?;
    let expire = run(&["expire", "--dry-run", "--keep-full", "1", "--json"])?;
    has_fields(
        &expire,
        "expire --dry-run",
        &[
            "policy",
            "applied",
            "delete_backups",
            "keep",
            "bytes_freed",
            "window_before",
            "window_after",
        ],
    )?;
    ensure!(
        expire["applied"] == false && expire["delete_backups"].as_array().is_some_and(|d| d.len() == 2),
        "{expire:#}"
    );
    let delete = run(&["delete", id, "--dry-run", "--json"])?;
    has_fields(
        &delete,
        "delete --dry-run",
        &["applied", "delete_backups", "bytes_freed"],
    )?;
    let pgdata = vault.restore_path("dry");
    let dry = run(&[
        "restore",
        "--pgdata",
        &pgdata.display().to_string(),
        "--dry-run",
        "--json",
    ])?;
    has_fields(
        &dry,
        "restore --dry-run",
        &["dry_run", "backup", "recovery", "pgdata", "target"],
    )?;
    has_fields(
        &dry["recovery"],
        "restore --dry-run recovery",
        &["timeline_path", "wal", "reachable_end_lsn"],
    )?;
    ensure!(!pgdata.exists(), "a dry run writes nothing");
    let pin = run(&["pin", id, "--until", "30d", "--json"])?;
    has_fields(&pin, "pin", &["backup", "pinned", "until"])?;
    let unpin = run(&["unpin", id, "--json"])?;
    ensure!(unpin["was_pinned"] == true && unpin["pinned"] == false, "{unpin:#}");
    // The list still shows all three backups: the dry runs deleted nothing.
    ensure!(
        vault.list()?["backups"].as_array().is_some_and(|b| b.len() == 3),
        "dry runs delete nothing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_conventions_pg15() {
    let Some(install) = install_under_test(15) else { return };
    scenario(install).await.expect("output conventions");
}

/// Usage errors exit 2, from clap (pgvault) and from the hand parser (pgvault-archive); help
/// and version exit 0.
#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--no-such-flag", "list"][..],
        &["list", "--no-such-flag"],
        &["no-such-command"],
        &["restore"],
        &["expire", "--keep-full", "many"],
        &["--log-level", "loud", "list"],
        &["--log-format", "xml", "list"],
        &["check", "--timeout", "5m"],
    ] {
        let out = run_pgvault(args, None).expect("run pgvault");
        assert_eq!(out.code(), Some(2), "pgvault {args:?} is a usage error: {out}");
        assert!(out.stdout.is_empty(), "usage errors go to stderr: {out}");
    }
    for args in [&["--help"][..], &["--version"], &["backup", "--help"]] {
        let out = run_pgvault(args, None).expect("run pgvault");
        assert_eq!(out.code(), Some(0), "pgvault {args:?}: {out}");
    }
    for args in [
        &["bogus"][..],
        &[],
        &["--log-format", "xml", "push", "x"],
        &["--log-level", "loud", "push", "x"],
    ] {
        let out = run_pgvault_archive(args, None).expect("run pgvault-archive");
        assert_eq!(out.code(), Some(2), "pgvault-archive {args:?} is a usage error: {out}");
    }
}

#[test]
fn bar_lines_are_recognised() {
    assert!(bar_line_has_rate_and_eta(
        "streaming [=====>     ] 120.0MB/300.0MB 36.2MB/s eta 5s (3s)"
    ));
    assert!(!bar_line_has_rate_and_eta("streaming [     ] 0B/300.0MB - eta ? (0s)"));
    assert!(!bar_line_has_rate_and_eta(
        "backup 20261202-031500F complete: 1.2GB in 34.0s (36.0MB/s)"
    ));
    assert_eq!(strip_ansi("\u{1b}[2K\u{1b}[1Gab\rc"), "ab\nc");
}
