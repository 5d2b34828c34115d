//! `pgvault doctor`: audits the configured server and repository for production readiness and
//! prints the findings grouped by severity (or as JSON). The exit status follows the worst
//! finding: 0 nothing above info, 3 warnings, 4 critical; 1 when the server cannot be reached.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use pgvault_ops::doctor::{self, facts::Thresholds, DoctorOptions, Report, Severity};
use pgvault_ops::tune::{Storage, Workload};
use serde_json::json;

use crate::commands::Context;
use crate::tune_cmd;
use crate::verify_cmd::{parse_duration, ExitStatus};

#[derive(Args)]
pub struct DoctorArgs {
    /// Machine-readable output: {"findings": [...], "summary": {...}}.
    #[arg(long)]
    json: bool,
    /// Memory of the database host for tune's advice (`32GB`); default detected when the server
    /// is on this host.
    #[arg(long, value_name = "SIZE", value_parser = tune_cmd::parse_size)]
    memory: Option<u64>,
    /// CPUs of the database host; default detected when the server is on this host.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    cpus: Option<u32>,
    /// Storage the data directory is on: ssd, hdd or network.
    #[arg(long, value_name = "KIND", default_value = "ssd", value_parser = tune_cmd::parse_storage)]
    storage: Storage,
    /// What the server mostly does: web, oltp, dw or mixed.
    #[arg(long, value_name = "KIND", default_value = "mixed", value_parser = tune_cmd::parse_workload)]
    workload: Workload,
    /// The newest backup may be this old (default: what `[schedule] backup` allows, the same
    /// age the `pgvault_backup_max_age_seconds` alert uses; else `36h`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    backup_max_age: Option<Duration>,
    /// The newest restore drill may be this old (`30d`).
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
    drill_max_age: Duration,
}

pub async fn doctor(ctx: &Context, args: DoctorArgs) -> Result<()> {
    let config = ctx.config()?;
    let opts = DoctorOptions {
        memory_bytes: args.memory,
        cpus: args.cpus,
        storage: args.storage,
        workload: args.workload,
        thresholds: Thresholds {
            backup_max_age: args
                .backup_max_age
                .or_else(|| pgvault_core::metrics::backup_max_age(&config, chrono::Utc::now()))
                .unwrap_or(Thresholds::default().backup_max_age),
            drill_max_age: args.drill_max_age,
        },
        now: chrono::Utc::now(),
    };
    let facts = doctor::gather(&config, &opts).await?;
    let report = doctor::judge(&facts);
    let target = pgvault_core::server::describe(&config);
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["server"] = json!({ "target": target, "major": facts.server_major });
        crate::display::print_json(&value)?;
    } else {
        print_report(&report, &target, facts.server_major);
    }
    match report.summary.exit_code {
        0 => Ok(()),
        code => Err(ExitStatus(code).into()),
    }
}

fn print_report(report: &Report, target: &str, major: u32) {
    let s = &report.summary;
    println!(
        "pgvault doctor: PostgreSQL {major} at {target}: {} critical, {} warning(s), {} info",
        s.critical, s.warning, s.info
    );
    for severity in [Severity::Critical, Severity::Warning, Severity::Info] {
        let group: Vec<_> = report.findings.iter().filter(|f| f.severity == severity).collect();
        if group.is_empty() {
            continue;
        }
        println!();
        println!("{}", severity.as_str().to_uppercase());
        for f in group {
            println!("  [{}] {}", f.id, f.title);
            println!("      evidence: {}", f.evidence);
            println!("      fix:      {}", f.fix);
        }
    }
    if report.findings.is_empty() {
        println!("nothing to fix");
    }
}
