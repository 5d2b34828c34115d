//! Helpers for `recovery_paths.rs` (`mod recovery_common;`): rows tagged by phase, server-clock
//! target times, restores that are expected to fail, and readers for the parts of pgvault's
//! output the tests assert on (`list --json` windows, `restore --dry-run`).
//!
//! The readers are deliberately in one place: the exact spelling of the `"windows"` array and of
//! the dry-run report is the lead's to settle, and only these functions need to follow it.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgvault_core::lsn::Lsn;
use pgvault_tests::{CmdOutput, PgCluster, PgInstall, Vault};

/// How long a restored cluster may take to reach its target and promote.
pub const RECOVERY: Duration = Duration::from_secs(180);
/// How long a switched segment may take to reach the repository.
pub const ARCHIVED: Duration = Duration::from_secs(60);

/// `CREATE TABLE t` of the tests: one row per insert, tagged with the phase that wrote it.
pub async fn create_table(c: &PgCluster) -> Result<()> {
    c.execute("CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL)")
        .await?;
    c.execute("INSERT INTO t (phase) VALUES ('base')").await
}

/// Ten rows of `phase`, committed in one transaction.
pub async fn insert_phase(c: &PgCluster, phase: &str) -> Result<()> {
    c.execute(&format!(
        "INSERT INTO t (phase) SELECT '{phase}' FROM generate_series(1, 10)"
    ))
    .await
}

/// Rows per phase, as "base:1 r1:10 …" (phases sorted by name).
pub async fn phases(c: &PgCluster) -> Result<String> {
    let client = c.client().await?;
    let rows = client
        .query("SELECT phase, count(*) FROM t GROUP BY phase ORDER BY phase", &[])
        .await
        .context("counting rows per phase")?;
    Ok(rows
        .iter()
        .map(|r| format!("{}:{}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>()
        .join(" "))
}

/// A point in time strictly between the commits before and after it, read from the *server's*
/// clock (recovery compares commit timestamps, which come from it): sleeps around the reading
/// so that neighbouring commits are well apart.
pub async fn server_time_between(c: &PgCluster) -> Result<String> {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t: String = c
        .query_scalar("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Ok(t)
}

/// Switches WAL and waits until the finished segment is in the repository; returns its name.
pub async fn switch_and_archive(c: &PgCluster) -> Result<String> {
    let seg = c.switch_wal().await?;
    c.wait_for_archived(&seg, ARCHIVED).await?;
    Ok(seg)
}

/// `pgvault restore --pgdata <vault dir>/<name> args…`, whatever its outcome.
pub fn restore_raw(vault: &Vault, name: &str, args: &[&str]) -> Result<CmdOutput> {
    let dir = vault.restore_path(name);
    let mut all = vec!["restore".to_string(), "--pgdata".to_string(), dir.display().to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    vault.pgvault(&all)
}

/// Restores with `args`, turns archiving off in the restored configuration unless
/// `keep_archiving` (as [`Vault::restore`] does), starts the server and waits until it has
/// reached its target and promoted. Returns the cluster and the restore's output (which names
/// the backup it used).
pub async fn restore_and_promote(
    install: &PgInstall,
    vault: &Vault,
    name: &str,
    args: &[&str],
    keep_archiving: bool,
) -> Result<(PgCluster, CmdOutput)> {
    let (mut c, out) = restore_as_is(install, vault, name, args)?;
    if !keep_archiving {
        disable_archiving(c.data_dir())?;
    }
    c.start()?;
    c.wait_for_recovery_end(RECOVERY).await?;
    Ok((c, out))
}

/// Appends `archive_mode = off` to a restored `postgresql.auto.conf`: a copy restored only to
/// look at its rows must not push a new timeline into the repository, where it would change what
/// later restores in the same test follow.
pub fn disable_archiving(pgdata: &Path) -> Result<()> {
    let auto = pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).with_context(|| auto.display().to_string())?;
    text.push_str("archive_mode = off\n");
    pgvault_tests::write_postgres_file(&auto, text, 0o600)
}

/// `pgvault restore` that must succeed, opened as a cluster (not started) with nothing added to
/// the configuration pgvault wrote; returns the restore's output too.
pub fn restore_as_is(install: &PgInstall, vault: &Vault, name: &str, args: &[&str]) -> Result<(PgCluster, CmdOutput)> {
    let out = restore_raw(vault, name, args)?.check()?;
    let c = PgCluster::from_data_dir(install, vault.restore_path(name), None)?;
    Ok((c, out))
}

/// Restores with `args`, makes the copy log every file PostgreSQL asks `restore_command` for
/// ([`log_fetches`]), turns its archiving off, starts it and waits for promotion. Returns the
/// cluster, the restore's output and the fetch log.
pub async fn restore_logging_fetches(
    install: &PgInstall,
    vault: &Vault,
    name: &str,
    args: &[&str],
) -> Result<(PgCluster, CmdOutput, String)> {
    let (mut c, out) = restore_as_is(install, vault, name, args)?;
    let log = vault.dir.join(format!("fetched-{name}.log"));
    log_fetches(c.data_dir(), &log)?;
    disable_archiving(c.data_dir())?;
    c.start()?;
    c.wait_for_recovery_end(RECOVERY).await?;
    let fetched = std::fs::read_to_string(&log).with_context(|| log.display().to_string())?;
    Ok((c, out, fetched))
}

/// True when `dir` does not exist or is an empty directory: a refused restore wrote nothing.
pub fn absent_or_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut it) => it.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Asserts that a refused restore wrote nothing into `dir`.
pub fn assert_nothing_written(dir: &Path, out: &CmdOutput) {
    assert!(
        absent_or_empty(dir),
        "a refused restore must write nothing, but {} holds files: {out}",
        dir.display()
    );
}

/// The 24-hex-digit WAL segment names in `text` (upper case, as PostgreSQL spells them), in
/// order of appearance, without repeats.
pub fn segment_names(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.len() == 24
            && word.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            && seen.insert(word.to_string())
        {
            out.push(word.to_string());
        }
    }
    out
}

/// Removes archived segment `seg` from a local repository by hand, as a lifecycle rule or an
/// operator would. The key is spelled by pgvault's own layout, so the test cannot miss it.
pub fn remove_archived_segment(vault: &Vault, seg: &str) -> Result<()> {
    let name = pgvault_core::wal::WalFileName::parse(seg).with_context(|| format!("{seg} is not a WAL file name"))?;
    let path = vault.repo.join(pgvault_core::repository::layout::wal_key(&name));
    if !path.is_file() {
        bail!("{seg} is not archived at {}", path.display());
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

/// Whether `name` (a WAL segment, `.history`, …) is in the local repository.
pub fn archived(vault: &Vault, name: &str) -> Result<bool> {
    let name = pgvault_core::wal::WalFileName::parse(name).with_context(|| format!("{name} is not a WAL file name"))?;
    Ok(vault
        .repo
        .join(pgvault_core::repository::layout::wal_key(&name))
        .is_file())
}

/// One recoverable window of `list --json` (`"windows"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
    pub start_time: String,
    pub end_time: String,
    /// The first missing segment when the window ends at a gap.
    pub ends_at_gap: Option<String>,
}

/// The `"windows"` array of `pgvault list --json`; an error (with the JSON) when it is missing or
/// malformed. The one place to adapt if the field names change.
pub fn windows(list: &serde_json::Value) -> Result<Vec<Window>> {
    let arr = list
        .get("windows")
        .and_then(|w| w.as_array())
        .with_context(|| format!("list --json has no \"windows\" array: {list}"))?;
    let text = |w: &serde_json::Value, k: &str| -> Result<String> {
        match w.get(k) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(v) if v.is_number() => Ok(v.to_string()),
            _ => bail!("window without {k}: {w}"),
        }
    };
    arr.iter()
        .map(|w| {
            let timeline = match w.get("timeline") {
                Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                Some(serde_json::Value::String(s)) => s.parse().ok(),
                _ => None,
            }
            .with_context(|| format!("window without a timeline: {w}"))?;
            let ends_at_gap = match w.get("ends_at_gap") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(v) => bail!("ends_at_gap is neither a segment name nor null: {v}"),
            };
            Ok(Window {
                timeline,
                start_lsn: text(w, "start_lsn")?,
                end_lsn: text(w, "end_lsn")?,
                start_time: text(w, "start_time")?,
                end_time: text(w, "end_time")?,
                ends_at_gap,
            })
        })
        .collect()
}

/// What `pgvault restore --dry-run` reported, read from its stdout line by line (a line is
/// recognised by its keyword, case-insensitively). The one place to adapt to its wording.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub text: String,
    /// The line naming the timeline path, e.g. "timeline path: 1 -> 2".
    pub timeline_line: String,
    /// The timeline ids on that line, in order.
    pub timelines: Vec<u32>,
    /// The first number on the line that counts segments.
    pub segments: u64,
    /// The line that names the furthest reachable point.
    pub reach_line: String,
}

impl DryRun {
    /// Reads the report; fails, quoting it, when a part is missing.
    pub fn parse(out: &CmdOutput) -> Result<DryRun> {
        let text = out.stdout.clone();
        // The most specific line first ("timeline path" before any line naming a timeline).
        let find = |keys: &[&str]| -> Result<String> {
            keys.iter()
                .find_map(|key| text.lines().find(|l| l.to_lowercase().contains(key)))
                .map(str::to_string)
                .with_context(|| format!("the dry run does not mention {keys:?}: {out}"))
        };
        let timeline_line = find(&["timeline path", "timelines", "timeline"])?;
        let timelines = timeline_path(&timeline_line);
        let seg_line = find(&["segments", "segment"])?;
        let segments = seg_line
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| !w.is_empty() && w.len() < 24)
            .and_then(|w| w.parse().ok())
            .with_context(|| format!("no segment count on \"{seg_line}\""))?;
        let reach_line = find(&["furthest", "reach"])?;
        Ok(DryRun {
            text,
            timeline_line,
            timelines,
            segments,
            reach_line,
        })
    }
}

/// The timeline ids of a path such as "timeline path: 1 -> 2 (switch at 0/3000148)": the numbers
/// after the last "timeline", joined by arrows, up to the first other word.
fn timeline_path(line: &str) -> Vec<u32> {
    let lower = line.to_lowercase().replace("->", " -> ").replace('→', " -> ");
    let after = lower
        .split_once("timeline path")
        .or_else(|| lower.rsplit_once("timeline"))
        .map_or("", |(_, r)| r);
    let mut out = Vec::new();
    for word in after.split_whitespace() {
        let word = word.trim_matches(|c: char| matches!(c, ',' | ':' | ';' | '.'));
        match word.parse::<u32>() {
            Ok(n) => out.push(n),
            Err(_) if word == "->" || word.is_empty() => {}
            Err(_) if out.is_empty() => {} // "path:", "s:" before the first id
            Err(_) => break,
        }
    }
    out
}

#[test]
fn timeline_paths_are_read() {
    assert_eq!(timeline_path("timeline path: 1 -> 2 (switch at 0/3000148)"), [1, 2]);
    assert_eq!(timeline_path("Timelines: 1→2→3"), [1, 2, 3]);
    assert_eq!(
        timeline_path("timeline path: 1 -> 2 (recovery_target_timeline = 2)"),
        [1, 2]
    );
    assert_eq!(timeline_path("recovery follows timeline 2"), [2]);
    assert!(timeline_path("no such thing").is_empty());
}

/// Replaces the `restore_command` pgvault wrote (the last one in `postgresql.auto.conf`) with
/// one that first appends `%f` to `log`, so that a test can see every file PostgreSQL asked for.
pub fn log_fetches(pgdata: &Path, log: &Path) -> Result<()> {
    let auto = pgdata.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&auto).with_context(|| auto.display().to_string())?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("restore_command"))
        .with_context(|| format!("no restore_command in {}", auto.display()))?;
    let value = line
        .split_once('=')
        .map(|(_, v)| v.trim())
        .context("restore_command line without =")?;
    let inner = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .context("restore_command is not quoted")?;
    pgvault_tests::write_postgres_file(log, "", 0o600)?;
    let wrapped = format!("restore_command = 'echo %f >> {} && {inner}'\n", log.display());
    pgvault_tests::write_postgres_file(&auto, format!("{text}{wrapped}"), 0o600)
}

/// The LSNs ("X/Y") written in `text`.
pub fn lsns_in(text: &str) -> Vec<Lsn> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '/'))
        .filter(|w| w.contains('/'))
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The WAL position where segment `seg` starts (16 MiB segments, the harness's default).
pub fn segment_start(seg: &str) -> Result<Lsn> {
    let name = pgvault_core::wal::WalFileName::parse(seg).with_context(|| seg.to_string())?;
    Ok(name.start_lsn(16 * 1024 * 1024))
}

/// What a restore that should have been refused recovers to (for the failure message).
pub async fn silently_recovered_rows(install: &PgInstall, vault: &Vault, name: &str) -> String {
    let run = async {
        let mut c = PgCluster::from_data_dir(install, vault.restore_path(name), None)?;
        c.start()?;
        c.wait_for_recovery_end(RECOVERY).await?;
        phases(&c).await
    };
    run.await
        .unwrap_or_else(|e: anyhow::Error| format!("(could not start it: {e:#})"))
}

/// PostgreSQL fetched every segment the dry run listed, and besides them only history files and
/// read-ahead (the segment after the last one listed on the same timeline).
pub fn check_fetches(dry: &CmdOutput, log: &str) -> Result<()> {
    let needed = segment_names(&dry.stdout);
    let fetched = segment_names(log);
    let report = DryRun::parse(dry)?;
    assert!(
        !fetched.is_empty(),
        "PostgreSQL fetched segments through restore_command: {log}"
    );
    if needed.is_empty() {
        // The dry run gives only a count: recovery read that many, plus at most one ahead.
        let n = fetched.len() as u64;
        assert!(
            n >= report.segments && n <= report.segments + 1,
            "the dry run counted {} segments, PostgreSQL fetched {fetched:?}",
            report.segments
        );
        return Ok(());
    }
    assert_eq!(
        report.segments,
        needed.len() as u64,
        "the dry run's count matches its list: {dry}"
    );
    for s in &needed {
        assert!(
            fetched.contains(s),
            "{s} was announced by the dry run but never fetched (fetched {fetched:?})"
        );
    }
    // The newest segment announced (the dry run names the first and last before listing all).
    let seg = needed
        .iter()
        .filter_map(|n| pgvault_core::wal::WalFileName::parse(n).ok())
        .max_by_key(|n| n.segment_number(16 << 20))
        .context("needed")?;
    let ahead =
        pgvault_core::wal::WalFileName::from_segment_number(seg.timeline, seg.segment_number(16 << 20) + 1, 16 << 20)
            .to_string();
    for f in &fetched {
        assert!(
            needed.contains(f) || *f == ahead,
            "PostgreSQL fetched {f}, which the dry run did not list ({needed:?}) and is not read-ahead"
        );
    }
    Ok(())
}

#[test]
fn output_readers() {
    let text = "needs 000000010000000000000002, 000000010000000000000003 and 00000002.history; \
                reach 0/3000148 at /tmp/x; 000000010000000000000002 again";
    assert_eq!(
        segment_names(text),
        ["000000010000000000000002", "000000010000000000000003"]
    );
    assert_eq!(lsns_in(text), [Lsn(0x3000148)]);
    let list = serde_json::json!({"windows": [
        {"timeline": 1, "start_lsn": "0/2000100", "end_lsn": "0/4000000", "start_time": "a", "end_time": "b",
         "ends_at_gap": "000000010000000000000004"},
        {"timeline": "2", "start_lsn": "0/5000100", "end_lsn": "0/6000000", "start_time": "c", "end_time": "d",
         "ends_at_gap": null},
    ]});
    let w = windows(&list).expect("two windows");
    assert_eq!(
        (w[0].timeline, w[0].ends_at_gap.as_deref()),
        (1, Some("000000010000000000000004"))
    );
    assert_eq!((w[1].timeline, w[1].ends_at_gap.as_deref()), (2, None));
    assert!(
        windows(&serde_json::json!({"backups": []})).is_err(),
        "no windows array is an error"
    );
}

#[cfg(test)]
fn fake_dry_run(stdout: &str) -> CmdOutput {
    use std::os::unix::process::ExitStatusExt;
    CmdOutput {
        command: "pgvault restore --dry-run".into(),
        status: std::process::ExitStatus::from_raw(0),
        stdout: stdout.into(),
        stderr: String::new(),
        elapsed: Duration::ZERO,
    }
}

#[cfg(test)]
const DRY: &str = "backup 20261201-214649F\ntimeline path: 1\nsegments: 2 (32.0 MiB): \
                   000000010000000000000002 000000010000000000000003\nfurthest reachable: 0/4000000\n";

#[test]
fn fetches_within_plan_and_read_ahead() {
    let log = "00000002.history\n000000010000000000000002\n000000010000000000000003\n\
               000000010000000000000004\n000000010000000000000003\n00000001.history\n";
    check_fetches(&fake_dry_run(DRY), log).expect("history probes and one read-ahead are fine");
}

#[test]
#[should_panic(expected = "not read-ahead")]
fn fetches_outside_plan_fail() {
    let log = "000000010000000000000002\n000000010000000000000003\n000000010000000000000005\n";
    let _ = check_fetches(&fake_dry_run(DRY), log);
}

#[test]
#[should_panic(expected = "never fetched")]
fn planned_segment_not_fetched_fails() {
    let _ = check_fetches(&fake_dry_run(DRY), "000000010000000000000003\n");
}
