//! One function per subcommand: load the configuration, open the repository, call the library,
//! print the outcome.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Args;
use pgvault_core::backup::{self, BackupOptions};
use pgvault_core::config::Config;
use pgvault_core::copy::{CopyOptions, CopySummary, PlanItem};
use pgvault_core::repository::summary::BackupSummary;
use pgvault_core::repository::Repository;
use pgvault_core::server;
use serde_json::json;

use crate::display;
use crate::logging;
use crate::progress;

pub struct Context {
    pub config_path: Option<PathBuf>,
    pub show_progress: bool,
}

impl Context {
    pub fn config(&self) -> Result<Config> {
        let config = Config::load(self.config_path.as_deref())?;
        for w in &config.warnings {
            logging::warn(&w.to_string());
        }
        Ok(config)
    }
}

#[derive(Args)]
pub struct BackupArgs {
    /// Store the WAL needed for consistency inside the backup (self-contained; no archive needed).
    #[arg(long)]
    include_wal: bool,
    /// A label for the backup (shown by PostgreSQL in backup_label).
    #[arg(long)]
    label: Option<String>,
    /// Seconds to wait for the archiver to store the backup's WAL (overrides [backup] archive_wait_timeout).
    #[arg(long, value_name = "SECONDS")]
    archive_wait_timeout: Option<u64>,
    /// full, incr (changed blocks since the newest backup) or diff (since the newest full);
    /// incr and diff need PostgreSQL 17+ with summarize_wal = on.
    #[arg(long = "type", default_value = "full", value_parser = ["full", "incr", "diff"])]
    kind: String,
    /// Print the new backup's summary as JSON (the object `list --json` shows per backup).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CopyArgs {
    /// Configuration file of the target repository: its [repository] (and credentials) and an
    /// [encryption] passphrase that opens this repository's key. [postgres] may be empty.
    #[arg(long, value_name = "CONFIG")]
    to: PathBuf,
    /// List what would be copied, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Objects copied at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    parallel: usize,
    /// Print the plan (with --dry-run) or what was copied as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub async fn init(ctx: &Context) -> Result<()> {
    let config = ctx.config()?;
    let mut conn = server::connect(&config, true).await?;
    let (identity, _) = server::cluster_identity(&mut conn, &config).await?;
    // Incremental backups (17+) need WAL summaries: say so now rather than at the first fallback.
    let summarize_off = identity.major() >= 17
        && server::show(&mut conn, &config, "summarize_wal")
            .await
            .is_ok_and(|v| v.trim() == "off");
    let _ = conn.close().await;
    let (repo, created) = Repository::init(&config, identity.clone(), None).await?;
    if summarize_off {
        logging::note(
            "summarize_wal is off: `pgvault backup --type incr|diff` will take full backups instead; \
             ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); (docs/INCREMENTAL.md)",
        );
    }
    let enc = if repo.is_encrypted() {
        "encrypted (AES-256-GCM)"
    } else {
        "NOT encrypted"
    };
    if created {
        println!(
            "initialized repository {} for cluster {} (PostgreSQL {}, {} WAL segments), {enc}",
            repo.storage(),
            identity.system_identifier,
            identity.major(),
            display::bytes(identity.wal_segment_size)
        );
        if !repo.is_encrypted() {
            logging::note("backups in this repository are stored unencrypted; set [encryption] passphrase_file to encrypt a new repository");
        }
    } else {
        println!(
            "repository {} already initialized for this cluster, {enc}",
            repo.storage()
        );
    }
    Ok(())
}

pub async fn backup(ctx: &Context, args: BackupArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let mut opts = BackupOptions::from_config(&config);
    opts.include_wal |= args.include_wal;
    opts.label = args.label;
    opts.kind = match args.kind.as_str() {
        "incr" => pgvault_core::repository::catalog::BackupKind::Incr,
        "diff" => pgvault_core::repository::catalog::BackupKind::Diff,
        _ => pgvault_core::repository::catalog::BackupKind::Full,
    };
    if let Some(s) = args.archive_wait_timeout {
        opts.archive_wait = std::time::Duration::from_secs(s);
    }
    let started = Instant::now();
    let bar = progress::for_terminal(ctx.show_progress);
    let cat = backup::run(&config, &repo, &opts, bar).await?;
    let took = started.elapsed();
    if let Some(mib) = display::peak_memory_mib() {
        tracing::info!("peak memory {mib} MiB");
    }
    if args.json {
        let mut v = crate::list::backup_json(&BackupSummary::from(&cat));
        v["duration_seconds"] = json!(display::json_seconds(took));
        return display::print_json(&v);
    }
    // One line, the id second: scripts (and the test harness) read it from there.
    println!(
        "backup {} complete: {} in {} ({}), {} files, stored {} ({}{}), WAL {}..{}{}",
        cat.id,
        display::bytes(cat.size),
        display::seconds(took),
        display::rate(cat.size, took),
        cat.files.len(),
        display::bytes(cat.stored_size),
        cat.compression,
        if cat.encrypted { ", encrypted" } else { "" },
        cat.start_wal,
        cat.stop_wal,
        if cat.wal_included { " (included)" } else { "" },
    );
    Ok(())
}

pub async fn info(ctx: &Context, args: ListArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let m = repo.meta();
    if args.json {
        return display::print_json(&json!({
                "repository": repo.storage().to_string(),
                "repository_id": m.repository_id,
                "format_version": m.format_version,
                "created_at": m.created_at.to_rfc3339(),
                "system_identifier": m.cluster.system_identifier.to_string(),
                "pg_version_num": m.cluster.pg_version_num,
                "wal_segment_size": m.cluster.wal_segment_size,
                "encrypted": repo.is_encrypted(),
                "compression": repo.compression_name(),
                "wal_push_mode": repo.wal_push_mode().name(),
        }));
    }
    println!("repository      {}", repo.storage());
    println!("id              {}", m.repository_id);
    println!("format          version {}", m.format_version);
    println!("created         {} by {}", m.created_at.to_rfc3339(), m.created_by);
    println!(
        "cluster         {} (PostgreSQL {}, {} WAL segments)",
        m.cluster.system_identifier,
        m.cluster.major(),
        display::bytes(m.cluster.wal_segment_size)
    );
    println!(
        "encryption      {}",
        if repo.is_encrypted() {
            "AES-256-GCM, Argon2id-wrapped key"
        } else {
            "none"
        }
    );
    println!("compression     {}", repo.compression_name());
    println!("WAL push mode   {}", repo.wal_push_mode().description());
    Ok(())
}

pub async fn copy(ctx: &Context, args: CopyArgs) -> Result<()> {
    let config = ctx.config()?;
    let target_config =
        Config::load(Some(&args.to)).with_context(|| format!("target configuration (--to {})", args.to.display()))?;
    for w in &target_config.warnings {
        logging::warn(&w.to_string());
    }
    let repo = Repository::open(&config).await?;
    let opts = CopyOptions {
        dry_run: args.dry_run,
        parallel: args.parallel.clamp(1, 64),
    };
    let started = Instant::now();
    let bar = progress::for_terminal(ctx.show_progress && !args.dry_run);
    let summary = pgvault_core::copy::run(&repo, &target_config, &opts, bar).await?;
    if args.json {
        return display::print_json(&copy_json(&summary, started.elapsed()));
    }
    if args.dry_run {
        for item in &summary.plan {
            match item {
                PlanItem::Backup {
                    id,
                    objects,
                    bytes,
                    objects_present,
                } => println!(
                    "would copy backup {id}: {objects} object(s), {}{}",
                    display::bytes(*bytes),
                    if *objects_present > 0 {
                        format!(" ({objects_present} already there from an earlier run)")
                    } else {
                        String::new()
                    }
                ),
                PlanItem::Wal { name, bytes } => println!("would copy WAL {name} ({})", display::bytes(*bytes)),
            }
        }
        for gap in &summary.gap_plan {
            println!("would copy WAL gap marker {gap}");
        }
        println!("dry run: {}", summary.one_line());
    } else {
        println!("{}, took {}", summary.one_line(), display::seconds(started.elapsed()));
    }
    Ok(())
}

/// `copy --json`: the counts, and the plan (what the target lacked when the run started).
fn copy_json(s: &CopySummary, took: std::time::Duration) -> serde_json::Value {
    json!({
        "source": s.source,
        "target": s.target,
        "dry_run": s.dry_run,
        "descriptor_created": s.descriptor_created,
        "backups_copied": s.backups_copied,
        "backups_present": s.backups_present,
        "wal_copied": s.wal_copied,
        "wal_present": s.wal_present,
        "gaps_copied": s.gaps_copied,
        "gaps_present": s.gaps_present,
        "gap_plan": s.gap_plan,
        "objects_copied": s.objects_copied,
        "bytes_copied": s.bytes_copied,
        "objects_reused": s.objects_reused,
        "backups_expired_by_target": s.backups_expired_by_target,
        "wal_expired_by_target": s.wal_expired_by_target,
        "plan": s.plan.iter().map(|item| match item {
            PlanItem::Backup { id, objects, bytes, objects_present } => json!({
                "kind": "backup", "id": id, "objects": objects, "bytes": bytes, "objects_present": objects_present,
            }),
            PlanItem::Wal { name, bytes } => json!({ "kind": "wal", "name": name, "bytes": bytes }),
        }).collect::<Vec<_>>(),
        "duration_seconds": display::json_seconds(took),
    })
}

/// `pgvault upgrade`: makes a repository write the newest format. Only the descriptor changes;
/// objects already stored keep their format and stay readable.
pub async fn upgrade(ctx: &Context) -> Result<()> {
    let config = ctx.config()?;
    let mut repo = Repository::open(&config).await?;
    let from = repo.meta().format_version;
    if repo.upgrade().await? {
        println!(
            "repository {} upgraded from format {from} to {}: new objects are bound to their names; objects stored before stay in format {from} and readable",
            repo.storage(),
            repo.meta().format_version
        );
    } else {
        println!(
            "repository {} already writes format {}",
            repo.storage(),
            repo.meta().format_version
        );
    }
    Ok(())
}
