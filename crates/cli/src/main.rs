//! `pgvault`: the command people run (and cron runs) to manage backups of one cluster.
//!
//! Thin by design: argument parsing, progress display and human/JSON output live here; all the
//! work is in `pgvault-core`, so the same code paths are exercised by the library's tests.
//!
//! Output conventions (docs/COMMANDS.md): results on stdout (`--json` on the read commands),
//! diagnostics on stderr through `tracing` (`--log-level`, `--log-format`), a progress bar only
//! when stderr is a terminal, and the exit status says how it went (0 ok, 1 error, 2 usage,
//! 3 warnings, 4 critical finding).

mod commands;
mod deploy_cmd;
mod display;
mod doctor_cmd;
mod drill_cmd;
mod expire;
mod hints;
mod list;
mod logging;
mod metrics_cmd;
mod progress;
mod restore_cmd;
mod schedule_cmd;
mod schedule_jobs;
mod tune_cmd;
mod verify_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pgvault",
    version,
    about = "Back up PostgreSQL and restore it to any point in time"
)]
struct Cli {
    /// Configuration file (default: $PGVAULT_CONFIG, then /etc/pgvault/pgvault.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); --log-level wins.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// The least severe log events shown on stderr (default warn; PGVAULT_LOG, a tracing filter, wins).
    #[arg(long, global = true, value_enum, value_name = "LEVEL")]
    log_level: Option<logging::Level>,
    /// How log lines are written on stderr: text, or json (one JSON object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "PGVAULT_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: logging::Format,
    /// Never show a progress bar, even on a terminal.
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the repository for the configured cluster (safe to run again).
    Init,
    /// Take a full base backup.
    Backup(commands::BackupArgs),
    /// List backups and the recoverable window.
    List(commands::ListArgs),
    /// Restore a backup into a new data directory, optionally to a point in time.
    Restore(Box<restore_cmd::RestoreArgs>),
    /// Show the repository: location, cluster, encryption, format version.
    Info(commands::ListArgs),
    /// Copy every backup and WAL file into a second repository (resumable, verified).
    Copy(commands::CopyArgs),
    /// Make the repository write the newest on-disk format (objects already stored stay readable).
    Upgrade,
    /// Read every object back and check WAL continuity (exit 0 whole, 4 damage or a gap).
    Verify(verify_cmd::VerifyArgs),
    /// Switch WAL on the server and wait until the segment is in the repository.
    Check(verify_cmd::CheckArgs),
    /// Delete the backups and WAL the [retention] policy no longer keeps (see --dry-run).
    Expire(expire::ExpireArgs),
    /// Delete one backup (refused when pinned or when another backup depends on it).
    Delete(expire::DeleteArgs),
    /// Protect a backup from expire and delete, optionally until a date.
    Pin(expire::PinArgs),
    /// Remove a backup's pin.
    Unpin(expire::UnpinArgs),
    /// Restore a backup into a sandbox, start it, check it, and measure the RTO and RPO.
    Drill(Box<drill_cmd::DrillArgs>),
    /// Recommended postgresql.conf settings for this machine, with reasons (see docs/TUNE.md).
    Tune(Box<tune_cmd::TuneArgs>),
    /// Audit the server and the repository for production readiness (exit 0 ok, 3 warnings, 4 critical).
    Doctor(doctor_cmd::DoctorArgs),
    /// Run the [schedule] jobs (backup, expire, verify, drill) and serve [metrics], in the foreground.
    Schedule(schedule_cmd::ScheduleArgs),
    /// Print the Prometheus metrics, or write them for node_exporter (--textfile).
    Metrics(metrics_cmd::MetricsArgs),
    /// Render systemd units, a Compose stack or Kubernetes manifests with backups wired in.
    Deploy(Box<deploy_cmd::DeployArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs each job run at info: that is its output.
    let daemon = matches!(cli.command, Command::Schedule(_));
    let directive = match (cli.log_level, cli.verbose) {
        (None, 0) if daemon => "info",
        (level, verbose) => logging::directive(level, verbose),
    };
    logging::init(directive, cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgvault: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = commands::Context {
        config_path: cli.config,
        // JSON logs are read by programs: a bar would only garble them.
        show_progress: !cli.no_progress && cli.log_format == logging::Format::Text,
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Init => commands::init(&ctx).await,
            Command::Backup(a) => commands::backup(&ctx, a).await,
            Command::List(a) => list::list(&ctx, a).await,
            Command::Restore(a) => restore_cmd::restore(&ctx, *a).await,
            Command::Info(a) => commands::info(&ctx, a).await,
            Command::Copy(a) => commands::copy(&ctx, a).await,
            Command::Upgrade => commands::upgrade(&ctx).await,
            Command::Verify(a) => verify_cmd::verify(&ctx, a).await,
            Command::Check(a) => verify_cmd::check(&ctx, a).await,
            Command::Expire(a) => expire::expire(&ctx, a).await,
            Command::Delete(a) => expire::delete(&ctx, a).await,
            Command::Pin(a) => expire::pin(&ctx, a).await,
            Command::Unpin(a) => expire::unpin(&ctx, a).await,
            Command::Drill(a) => drill_cmd::drill(&ctx, *a).await,
            Command::Tune(a) => tune_cmd::tune(&ctx, *a).await,
            Command::Doctor(a) => doctor_cmd::doctor(&ctx, a).await,
            Command::Schedule(a) => schedule_cmd::schedule(&ctx, a).await,
            Command::Metrics(a) => metrics_cmd::metrics(&ctx, a).await,
            Command::Deploy(a) => deploy_cmd::deploy(&ctx, *a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The command printed its report (findings: exit 3 or 4); only its status is left.
            if let Some(status) = e.downcast_ref::<verify_cmd::ExitStatus>() {
                return ExitCode::from(status.0);
            }
            logging::error(&format!("{e:#}"), hints::hint(&e).as_deref());
            ExitCode::FAILURE
        }
    }
}
