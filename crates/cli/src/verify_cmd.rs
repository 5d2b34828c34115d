//! `pgvault verify` and `pgvault check`: the report, printed short and decisive (what is damaged
//! first, then what can be restored), or as JSON; the exit status derives from the findings.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use pgvault_core::repository::Repository;
use pgvault_core::verify::{self, CheckOptions, Restorable, VerifyOptions, VerifyReport};
use serde_json::json;

use crate::commands::Context;
use crate::display;

/// A command finished its job and wants this exit status (3 warnings, 4 damage); its report is
/// already printed, so `main` prints nothing more.
#[derive(Debug)]
pub struct ExitStatus(pub u8);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

#[derive(Args)]
pub struct VerifyArgs {
    /// Verify only this backup (its objects, its WAL, and the WAL after it).
    #[arg(long, value_name = "ID")]
    backup: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Objects read at once (each streamed; memory stays bounded).
    #[arg(long, default_value_t = 4, value_name = "N")]
    parallel: usize,
}

#[derive(Args)]
pub struct CheckArgs {
    /// How long to wait for the switched segment to arrive, in PostgreSQL's units (`90s`, `5min`);
    /// default [backup] archive_wait_timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A clap value parser for durations in PostgreSQL's units (`90s`, `5min`), by the one parser.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    pgvault_core::units::parse_duration(s).map_err(|e| e.to_string())
}

pub async fn verify(ctx: &Context, args: VerifyArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let opts = VerifyOptions {
        backup: args.backup,
        parallel: args.parallel.clamp(1, 64),
    };
    let report = verify::verify(&repo, &opts).await?;
    // The metrics report the last verify from this record; failing to store it fails nothing.
    if let Err(e) = verify::record::store(&repo, &report, chrono::Utc::now()).await {
        tracing::warn!("cannot store the verify record for the metrics: {e}");
    }
    if args.json {
        // The library's report, plus its duration in seconds like every other JSON document.
        let mut v = serde_json::to_value(&report)?;
        v["duration_seconds"] = json!(display::json_seconds(Duration::from_millis(report.duration_ms)));
        display::print_json(&v)?;
    } else {
        print_report(&report);
    }
    match report.exit_code() {
        0 => Ok(()),
        code => Err(ExitStatus(code).into()),
    }
}

fn print_report(r: &VerifyReport) {
    let what = r
        .scope
        .as_ref()
        .map_or("repository".to_string(), |id| format!("backup {id}"));
    if r.whole {
        println!("{what} is whole: every object read back and checked, WAL continuous");
    } else {
        println!("DAMAGE: {} problem(s) found in {what}", r.findings.len());
        for f in &r.findings {
            println!("  {f}");
        }
    }
    let damaged: Vec<&str> = r.backups.iter().filter(|b| !b.ok).map(|b| b.id.as_str()).collect();
    if !damaged.is_empty() {
        println!("not restorable: {}", damaged.join(", "));
    }
    if r.backups.iter().any(|b| b.ok) {
        println!("restorable:");
    }
    for b in r.backups.iter().filter(|b| b.ok) {
        println!("  {}  {}", b.id, describe(&b.restorable));
    }
    // Damage gaps are findings (above); holes before the horizon were expired on purpose.
    for t in &r.timelines {
        for g in t.gaps.iter().filter(|g| !g.damage) {
            println!(
                "timeline {}: WAL {}..{} removed by expire (before the horizon; not damage)",
                t.timeline, g.first_missing, g.last_missing
            );
        }
    }
    let c = &r.counts;
    println!(
        "read {} backup(s), {} bundle(s), {} manifest(s), {} WAL file(s): {} stored, {} checked, in {}",
        c.backups,
        c.bundles,
        c.manifests,
        c.wal_files,
        display::bytes(c.stored_bytes),
        display::bytes(c.plain_bytes),
        display::seconds(Duration::from_millis(r.duration_ms))
    );
}

fn describe(r: &Restorable) -> String {
    match r {
        Restorable::No => "NOT restorable".into(),
        Restorable::EndPoint { lsn, time } => format!("restorable to its end point {lsn} ({})", time.to_rfc3339()),
        Restorable::Window {
            timeline,
            start_lsn,
            start_time,
            end_lsn,
            end_time,
        } => format!(
            "restorable to any point on timeline {timeline} from {start_lsn} ({}) to {end_lsn}{}",
            start_time.to_rfc3339(),
            end_time.map(|t| format!(" ({})", t.to_rfc3339())).unwrap_or_default()
        ),
    }
}

pub async fn check(ctx: &Context, args: CheckArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let mut opts = CheckOptions::from_config(&config);
    if let Some(t) = args.timeout {
        if t.is_zero() {
            bail!("--timeout must be more than zero");
        }
        opts.timeout = t;
    }
    let report = verify::check(&config, &repo, &opts).await?;
    if args.json {
        display::print_json(&json!({
            "ok": true,
            "segment": report.segment,
            "switch_lsn": report.switch_lsn.to_string(),
            "waited_ms": report.waited_ms,
            "waited_seconds": display::json_seconds(Duration::from_millis(report.waited_ms)),
            "repository": repo.storage().to_string(),
        }))?;
    } else {
        println!(
            "archive path works: WAL segment {} was switched and reached {} in {}",
            report.segment,
            repo.storage(),
            display::seconds(Duration::from_millis(report.waited_ms))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_postgres_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("12").is_err(), "a number without a unit is refused");
        assert!(parse_duration("5m").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
