//! `pgvault schedule` on a real cluster (PostgreSQL 15) and a local repository (issue 9):
//!
//! - with `backup = "* * * * *"` and `[metrics] listen` on a free port, the daemon takes a backup
//!   within about two minutes and `GET /metrics` reports it (last-success timestamp, the job
//!   counter); the text passes `promtool check metrics`;
//! - a WAL switch (a push through `archive_command`) moves the newest-segment gauge;
//! - an `archive_command` made to fail for a moment raises `pgvault_archiver_failed_total`;
//! - SIGTERM stops the daemon: exit 0, and its log says so and shows the job's one-line record;
//! - `pgvault metrics --textfile` writes the same metrics into a file;
//! - `backup_incr` due at the same minute as `backup` skips its slot (the full wins), logged and
//!   counted in `pgvault_job_skipped_total{kind="backup_incr"}`;
//! - `--print --json` lists the incremental job's slots a full takes as skipped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use pgvault_tests::{
    archiving_cluster, checker, install_under_test, postgres_command, run_with_timeout, workspace_bin, Checker,
    ClusterOptions, Vault,
};

/// `GET /metrics` over a plain HTTP/1.1 connection: the body, when the status is 200.
fn get_metrics(port: u16) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP header end")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    ensure!(
        head.to_ascii_lowercase().contains("text/plain; version=0.0.4"),
        "{head}"
    );
    Ok(body.to_string())
}

/// The value of the first sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls the endpoint until `pred` holds, returning that text.
fn wait_metrics(port: u16, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(t) = get_metrics(port) {
            if pred(&t) {
                return Ok(t);
            }
            last = t;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("waited {timeout:?} for {what}; last metrics:\n{last}")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_daemon(config: &Path, dir: &Path) -> Result<Daemon> {
    let log = dir.join("schedule.log");
    let file = std::fs::File::create(&log)?;
    let child = postgres_command(workspace_bin("pgvault"))
        .arg("--config")
        .arg(config)
        .arg("schedule")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("starting pgvault schedule")?;
    Ok(Daemon { child, log })
}

/// The pgvault process: `pid` itself, or its child when `pid` is the `runuser` that started it.
fn pgvault_pid(pid: u32) -> Result<i32> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    if comm.trim() == "pgvault" {
        return Ok(i32::try_from(pid)?);
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    let child = children.split_whitespace().next().context("runuser has no child")?;
    Ok(child.parse()?)
}

fn promtool_check_metrics(text: &str, dir: &Path) -> Result<()> {
    let Some(promtool) = checker(Checker::Promtool) else {
        return Ok(());
    };
    let file = dir.join("metrics.prom");
    std::fs::write(&file, text)?;
    let out = run_with_timeout(
        std::process::Command::new("sh").arg("-c").arg(format!(
            "'{}' check metrics < '{}'",
            promtool.display(),
            file.display()
        )),
        Duration::from_secs(60),
    )?;
    ensure!(out.success(), "promtool check metrics: {out}\n{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_backs_up_serves_metrics_and_stops_on_sigterm() -> Result<()> {
    let Some(install) = install_under_test(15) else {
        return Ok(());
    };
    let vault = Vault::new()?;
    let cluster = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    let port = free_port()?;
    vault.write_config(
        &cluster,
        &format!(
            "\n[schedule]\nbackup = \"* * * * *\"\nbackup_incr = \"* * * * *\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\nrefresh = \"1s\"\n\n\
             [objectives]\nrpo = \"5min\"\nrto = \"30min\"\n"
        ),
    )?;
    let mut daemon = start_daemon(&vault.config, vault.dir.path())?;

    // The endpoint is up at once; the first backup runs at the next minute boundary.
    let full = "pgvault_backup_last_success_timestamp_seconds{type=\"full\"}";
    let text = wait_metrics(port, Duration::from_secs(150), "a scheduled backup", |t| {
        sample(t, full).is_some()
    })
    .with_context(|| daemon.log())?;
    ensure!(sample(&text, "pgvault_up") == Some(1.0), "{text}");
    ensure!(sample(&text, "pgvault_objective_rpo_seconds") == Some(300.0), "{text}");
    ensure!(sample(&text, "pgvault_archiver_up") == Some(1.0), "{text}");
    let text = wait_metrics(port, Duration::from_secs(30), "the job counter", |t| {
        sample(t, "pgvault_job_runs_total{kind=\"backup\"}").is_some_and(|v| v >= 1.0)
    })?;
    ensure!(
        sample(&text, "pgvault_job_failures_total{kind=\"backup\"}") == Some(0.0),
        "{text}\n{}",
        daemon.log()
    );
    // The incr due at the same minute gave way to the full: skipped, never run.
    ensure!(
        sample(&text, "pgvault_job_skipped_total{kind=\"backup_incr\"}").is_some_and(|v| v >= 1.0)
            && sample(&text, "pgvault_job_runs_total{kind=\"backup_incr\"}") == Some(0.0),
        "{text}\n{}",
        daemon.log()
    );
    promtool_check_metrics(&text, vault.dir.path())?;

    // A WAL switch: the pushed segment moves the newest-segment gauge.
    let newest = "pgvault_wal_newest_segment_number";
    let before = sample(&text, newest).context("no newest-segment gauge")?;
    cluster
        .execute("CREATE TABLE sched_t AS SELECT generate_series(1, 1000) AS i")
        .await?;
    cluster.switch_wal().await?;
    wait_metrics(port, Duration::from_secs(60), "the newest segment to move", |t| {
        sample(t, newest).is_some_and(|v| v > before)
    })?;

    // A failing archive_command: PostgreSQL counts the failures, the metric rises.
    let failed = "pgvault_archiver_failed_total";
    let before = sample(&get_metrics(port)?, failed).context("no archiver failure counter")?;
    cluster.alter_system("archive_command", "false").await?;
    cluster
        .execute("INSERT INTO sched_t SELECT generate_series(1, 1000)")
        .await?;
    cluster.switch_wal().await?;
    let raised = wait_metrics(port, Duration::from_secs(60), "archiver failures", |t| {
        sample(t, failed).is_some_and(|v| v > before)
    });
    cluster
        .alter_system("archive_command", &vault.archive_command())
        .await?;
    raised?;

    // SIGTERM: no new job starts, a running one finishes, exit 0. The signal goes to pgvault
    // itself, not to the `runuser` in front of it (which would kill it and die of the signal).
    let pid = nix::unistd::Pid::from_raw(pgvault_pid(daemon.child.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = daemon.child.try_wait()? {
            break s;
        }
        ensure!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = daemon.log();
    ensure!(status.code() == Some(0), "exit {status}:\n{log}");
    ensure!(log.contains("SIGTERM") && log.contains("schedule stopped"), "{log}");
    ensure!(log.contains("job backup ok in"), "one line per run: {log}");
    ensure!(
        log.contains("job backup_incr: skipping its slot") && !log.contains("job backup_incr ok"),
        "the full wins over the incr: {log}"
    );

    // The same metrics as a node_exporter textfile, written whole.
    let prom = vault.dir.path().join("pgvault.prom");
    let out = vault.pgvault(["metrics".as_ref(), "--textfile".as_ref(), prom.as_os_str()])?;
    ensure!(out.success(), "{out}");
    let text = std::fs::read_to_string(&prom)?;
    ensure!(
        sample(&text, full).is_some() && sample(&text, "pgvault_up") == Some(1.0),
        "{text}"
    );
    promtool_check_metrics(&text, vault.dir.path())?;
    Ok(())
}

/// `--print` needs no server and no repository: the incremental job's Sunday slot is the full's.
#[test]
fn print_shows_the_full_taking_the_incrementals_slot() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("pgvault.toml");
    std::fs::write(
        &config,
        "[postgres]\n[repository]\nurl = \"file:///nonexistent\"\n[schedule]\n\
         backup = \"0 2 * * sun\"\nbackup_incr = \"0 2 * * *\"\n",
    )?;
    let out = run_with_timeout(
        std::process::Command::new(workspace_bin("pgvault"))
            .arg("--config")
            .arg(&config)
            .args(["schedule", "--print", "--json", "--count", "7"]),
        Duration::from_secs(30),
    )?;
    ensure!(out.success(), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let jobs = v["jobs"].as_array().context("no jobs")?;
    let incr = jobs
        .iter()
        .find(|j| j["job"] == "backup_incr")
        .context("no backup_incr")?;
    let skipped = incr["skipped"].as_array().context("no skipped")?;
    ensure!(skipped.len() == 1 && skipped[0]["runs_instead"] == "backup", "{v}");
    let at = skipped[0]["at"].as_str().context("no time")?;
    let day = chrono::DateTime::parse_from_rfc3339(at)?.format("%a").to_string();
    ensure!(day == "Sun", "{v}");
    let next = incr["next"].as_array().context("no next")?;
    ensure!(next.len() == 7 && !next.iter().any(|t| t.as_str() == Some(at)), "{v}");
    let text = run_with_timeout(
        std::process::Command::new(workspace_bin("pgvault"))
            .arg("--config")
            .arg(&config)
            .args(["schedule", "--print"]),
        Duration::from_secs(30),
    )?;
    ensure!(text.stdout.contains("skipped: backup runs then"), "{text}");
    Ok(())
}
