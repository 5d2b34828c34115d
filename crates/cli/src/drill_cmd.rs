//! `pgvault drill`: restore a backup into a sandbox, start it, check it, and report the measured
//! RTO and RPO (see docs/DRILLS.md). Exit 0 when the drill passed, 4 when a check or an objective
//! failed (or the backup did not restore or recover), 1 when the drill could not run.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use pgvault_core::drill::{self, DrillOptions};
use pgvault_core::repository::Repository;
use pgvault_core::restore;

use crate::commands::Context;
use crate::display;
use crate::logging;
use crate::progress;
use crate::verify_cmd::ExitStatus;

/// Exit status of a drill that ran and failed.
pub const EXIT_FAILED: u8 = 4;

#[derive(Args)]
pub struct DrillArgs {
    /// Backup to restore (an id from `pgvault list`). Default: the one restore picks for the target.
    #[arg(long, value_name = "ID")]
    backup: Option<String>,
    /// Recover up to this time (with a zone). Default: the end of the archived WAL.
    #[arg(long, value_name = "TIME", conflicts_with = "random")]
    target_time: Option<String>,
    /// Recover to a random point in the recoverable window.
    #[arg(long)]
    random: bool,
    /// The sandbox directory (new or empty). Default: a new directory under the temp dir.
    #[arg(long, value_name = "DIR")]
    sandbox: Option<PathBuf>,
    /// Leave the sandbox (stopped server, data, log) for inspection.
    #[arg(long)]
    keep: bool,
    /// The PostgreSQL bin directory (default: found from the backup's major version).
    #[arg(long, value_name = "DIR")]
    pg_bin: Option<PathBuf>,
    /// A folder of *.sql assertions (overrides [drill] assertions).
    #[arg(long, value_name = "DIR")]
    assertions: Option<PathBuf>,
    /// The database role the checks connect as (default: the OS user running the server).
    #[arg(long, value_name = "ROLE")]
    db_user: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Bundles unpacked at once (overrides [restore] parallel).
    #[arg(long)]
    parallel: Option<usize>,
}

/// The `pgvault-archive` a drill writes into `restore_command`: `[restore] archive_command_path`,
/// else the one installed beside `pgvault`.
pub(crate) fn archive_command_path(config: &pgvault_core::config::Config) -> Result<PathBuf> {
    if let Some(p) = &config.restore.archive_command_path {
        return Ok(config.relative_to_config(p));
    }
    let exe = std::env::current_exe().context("cannot locate the pgvault executable")?;
    let beside = exe.with_file_name("pgvault-archive");
    if beside.exists() {
        return Ok(beside);
    }
    bail!(
        "pgvault-archive is not installed beside {} ; install it there or set [restore] archive_command_path",
        exe.display()
    )
}

pub async fn drill(ctx: &Context, args: DrillArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let target_time = match &args.target_time {
        Some(t) => Some(restore::target::parse_time(t)?.to_utc()),
        None => None,
    };
    let opts = DrillOptions {
        backup: args.backup,
        target_time,
        random: args.random,
        sandbox: args.sandbox,
        keep: args.keep,
        pg_bin: args.pg_bin,
        assertions: args.assertions,
        db_user: args.db_user,
        archive_command: archive_command_path(&config)?,
        parallel: args.parallel.unwrap_or(config.restore.parallel),
    };
    let bar = progress::for_terminal(ctx.show_progress && !args.json);
    let report = drill::run(&config, &repo, &opts, bar).await?;
    if args.json {
        display::print_json(&report)?;
    } else {
        print!("{}", report.render());
    }
    if !report.passed {
        for f in report.failures() {
            logging::error(&format!("drill failed: {f}"), None);
        }
        return Err(ExitStatus(EXIT_FAILED).into());
    }
    Ok(())
}
