//! `pgvault restore`: the command run during an incident, so it says before writing anything
//! which backup, which timelines and which WAL recovery will use, and how far it can get
//! (`--dry-run` stops there).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use pgvault_core::config::Config;
use pgvault_core::repository::Repository;
use pgvault_core::restore::{self, ArchiveMode, RestorePlan, RestoreRequest, RestoreType, Target, TargetAction};
use pgvault_core::timeline::Choice;
use serde_json::{json, Value};

use crate::commands::Context;
use crate::display;
use crate::progress;

#[derive(Clone, Copy, ValueEnum)]
pub enum ArchiveModeArg {
    /// Keep the backup's archive_mode: the recovered cluster archives its new timeline (real recoveries).
    Preserve,
    /// archive_mode = off: a copy for testing never archives into the production repository.
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TypeArg {
    /// Recover to the target, then the target action (recovery.signal).
    Default,
    /// A standby that keeps following the archive (standby.signal); takes no target.
    Standby,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The new data directory (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pgdata: PathBuf,
    /// Backup to restore: an id from `pgvault list`, or `latest`. Default: the newest backup on the
    /// target's timeline that is consistent before the target.
    #[arg(long, value_name = "ID")]
    backup: Option<String>,
    /// Recover up to this time (with a zone, e.g. "2026-11-23 03:12:00+00").
    #[arg(long, value_name = "TIME", group = "target")]
    target_time: Option<String>,
    /// Recover up to this LSN (e.g. 0/3000060).
    #[arg(long, value_name = "LSN", group = "target")]
    target_lsn: Option<String>,
    /// Recover up to and including this transaction id (64-bit, or 32-bit as PostgreSQL logs it).
    #[arg(long, value_name = "XID", group = "target")]
    target_xid: Option<u64>,
    /// Recover up to this restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME", group = "target")]
    target_name: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[arg(long, group = "target")]
    target_immediate: bool,
    /// What PostgreSQL does at the target: promote, pause or shutdown.
    #[arg(long, default_value = "promote", value_name = "ACTION")]
    target_action: TargetAction,
    /// Timeline to recover along: latest (default), current, or a timeline id.
    #[arg(long, value_name = "TLI")]
    target_timeline: Option<String>,
    /// Put a tablespace elsewhere: OLD=NEW, OLD being its OID or original location. Repeatable.
    #[arg(long, value_name = "OLD=NEW")]
    tablespace_map: Vec<String>,
    /// Keep a link of the backup (e.g. pg_wal linked elsewhere) as a link to NEW: OLD=NEW, OLD its
    /// path in the data directory. Unmapped links come back as plain directories. Repeatable.
    #[arg(long, value_name = "OLD=NEW")]
    link_map: Vec<String>,
    /// Whether the recovered cluster archives its WAL.
    #[arg(long, value_enum, default_value = "preserve")]
    archive_mode: ArchiveModeArg,
    /// What the restored cluster becomes.
    #[arg(long = "type", value_enum, default_value = "default")]
    kind: TypeArg,
    /// Print the backup, timeline path, WAL segments and furthest reachable point; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Bundles unpacked at once (overrides [restore] parallel).
    #[arg(long)]
    parallel: Option<usize>,
    /// Print the plan (with --dry-run) or the result as JSON.
    #[arg(long)]
    json: bool,
}

fn archive_command_path(config: &Config) -> Result<PathBuf> {
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

fn target_of(args: &RestoreArgs) -> Result<Target> {
    Ok(if let Some(t) = &args.target_time {
        Target::Time(restore::target::parse_time(t)?)
    } else if let Some(l) = &args.target_lsn {
        Target::Lsn(l.parse().with_context(|| format!("--target-lsn {l}"))?)
    } else if let Some(x) = args.target_xid {
        Target::Xid(x)
    } else if let Some(n) = &args.target_name {
        Target::Name(n.clone())
    } else if args.target_immediate {
        Target::Immediate
    } else {
        Target::End
    })
}

fn request(config: &Config, args: RestoreArgs, target: Target) -> Result<RestoreRequest> {
    let pgdata = std::path::absolute(&args.pgdata).unwrap_or(args.pgdata.clone());
    Ok(RestoreRequest {
        pgdata,
        backup: args.backup,
        target,
        action: args.target_action,
        timeline: args.target_timeline,
        tablespace_map: args.tablespace_map,
        link_map: args.link_map,
        archive_mode: match args.archive_mode {
            ArchiveModeArg::Preserve => ArchiveMode::Preserve,
            ArchiveModeArg::Off => ArchiveMode::Off,
        },
        kind: match args.kind {
            TypeArg::Default => RestoreType::Default,
            TypeArg::Standby => RestoreType::Standby,
        },
        parallel: args.parallel.unwrap_or(config.restore.parallel),
        archive_command: archive_command_path(config)?,
    })
}

/// What recovery will do, printed before anything is written (and all of `--dry-run`).
fn print_plan(plan: &RestorePlan, choice: Option<&Choice>, list_segments: bool) {
    let c = &plan.catalog;
    println!(
        "backup: {} (timeline {}, consistent at {}, {}), {} in {} files",
        c.id,
        c.stop_timeline,
        c.stop_lsn,
        c.stop_time.to_rfc3339(),
        display::bytes(c.size),
        c.files.len()
    );
    let Some(choice) = choice else { return };
    let p = &choice.plan;
    let path: Vec<String> = p.timeline_path.iter().map(|t| t.to_string()).collect();
    println!(
        "timeline path: {} (recovery_target_timeline = {})",
        path.join(" -> "),
        choice.target_tli
    );
    match (p.segments.first(), p.segments.last()) {
        (Some(f), Some(l)) => println!(
            "WAL segments from the archive: {} ({}, {} bytes), {f} .. {l}",
            p.segment_count(),
            display::bytes(p.bytes()),
            p.bytes()
        ),
        _ => println!("WAL segments from the archive: 0 (0 bytes)"),
    }
    if list_segments {
        for s in &p.segments {
            println!("  {s}");
        }
    }
    let time = p
        .reachable_end_time
        .map(|t| format!(", last commit at {}", t.to_rfc3339()))
        .unwrap_or_default();
    println!("furthest reachable point: {}{time}", p.reachable_end);
    if let Some(rp) = &choice.restore_point {
        println!(
            "restore point '{}' at {} ({})",
            rp.point.name,
            rp.point.lsn,
            rp.point.time.to_rfc3339()
        );
    }
}

/// The plan as `restore --dry-run --json` shows it.
fn plan_json(plan: &RestorePlan, choice: Option<&Choice>) -> Value {
    let c = &plan.catalog;
    let recovery = choice.map(|choice| {
        let p = &choice.plan;
        json!({
            "timeline_path": p.timeline_path,
            "target_timeline": choice.target_tli,
            "wal": {
                "segments": p.segment_count(),
                "bytes": p.bytes(),
                "first": p.segments.first().map(|s| s.to_string()),
                "last": p.segments.last().map(|s| s.to_string()),
                "names": p.segments.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            },
            "reachable_end_lsn": p.reachable_end.to_string(),
            "reachable_end_time": p.reachable_end_time.map(|t| t.to_rfc3339()),
            "restore_point": choice.restore_point.as_ref().map(|rp| json!({
                "name": rp.point.name, "lsn": rp.point.lsn.to_string(), "time": rp.point.time.to_rfc3339(),
            })),
        })
    });
    json!({
        "backup": {
            "id": c.id,
            "timeline": c.stop_timeline,
            "stop_lsn": c.stop_lsn.to_string(),
            "stop_time": c.stop_time.to_rfc3339(),
            "size": c.size,
            "files": c.files.len(),
        },
        "recovery": recovery,
    })
}

pub async fn restore(ctx: &Context, args: RestoreArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let target = target_of(&args)?;
    let (dry_run, as_json) = (args.dry_run, args.json);
    let req = request(&config, args, target.clone())?;
    let plan = restore::plan(&config, &repo, &req).await?;
    if as_json && dry_run {
        let mut v = plan_json(&plan, plan.recovery.as_ref());
        v["dry_run"] = json!(true);
        v["pgdata"] = json!(req.pgdata.display().to_string());
        v["target"] = json!(restore::target::describe(&target));
        return display::print_json(&v);
    }
    if !as_json {
        print_plan(&plan, plan.recovery.as_ref(), dry_run);
    }
    if dry_run {
        println!("dry run: nothing was written");
        return Ok(());
    }
    if plan.resume.is_some() {
        let msg = format!(
            "{} holds an interrupted restore of this backup: starting it over",
            req.pgdata.display()
        );
        if as_json {
            tracing::warn!("{msg}");
        } else {
            println!("{msg}");
        }
    }
    let started = Instant::now();
    let bar = progress::for_terminal(ctx.show_progress);
    let summary = restore::execute(&config, &repo, &plan, bar).await?;
    let took = started.elapsed();
    let then = match (req.kind, &target) {
        (RestoreType::Standby, _) => "stay a standby, following the archive".to_string(),
        (_, Target::End) => "promote".to_string(),
        _ => req.action.as_str().to_string(),
    };
    if as_json {
        let mut v = plan_json(&plan, plan.recovery.as_ref());
        v["dry_run"] = json!(false);
        v["pgdata"] = json!(req.pgdata.display().to_string());
        v["target"] = json!(restore::target::describe(&target));
        v["restored"] = json!({
            "bytes": summary.bytes,
            "files": summary.files,
            "duration_seconds": display::json_seconds(took),
            "tablespaces": summary.tablespaces.iter().map(|(oid, loc)| json!({"oid": oid, "location": loc.display().to_string()})).collect::<Vec<_>>(),
        });
        v["then"] = json!(then);
        return display::print_json(&v);
    }
    println!(
        "restored backup {} into {}: {} in {} files, took {} ({})",
        summary.backup_id,
        req.pgdata.display(),
        display::bytes(summary.bytes),
        summary.files,
        display::seconds(took),
        display::rate(summary.bytes, took)
    );
    for (oid, loc) in &summary.tablespaces {
        println!("  tablespace {oid} -> {}", loc.display());
    }
    println!(
        "recovery will replay WAL to {} and then {then}; start the server with: pg_ctl -D {} start",
        restore::target::describe(&target),
        req.pgdata.display()
    );
    Ok(())
}
