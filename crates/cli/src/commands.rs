//! One function per subcommand: load the configuration, open the repository, call the library,
//! print the outcome.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use pgvault_core::backup::{self, BackupOptions};
use pgvault_core::config::Config;
use pgvault_core::copy::{CopyOptions, PlanItem};
use pgvault_core::lsn::Lsn;
use pgvault_core::repository::{BackupCatalog, Repository};
use pgvault_core::restore::{self, RestoreRequest, Target, TargetAction};
use pgvault_core::server;
use serde_json::json;

use crate::display;
use crate::progress;

pub struct Context {
    pub config_path: Option<PathBuf>,
    pub show_progress: bool,
}

impl Context {
    fn config(&self) -> Result<Config> {
        let config = Config::load(self.config_path.as_deref())?;
        for w in &config.warnings {
            eprintln!("pgvault: warning: {w}");
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
}

#[derive(Args)]
pub struct ListArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The new data directory (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pgdata: PathBuf,
    /// Backup to restore: an id from `pgvault list`, or `latest`. Default: the newest backup that
    /// finished before the target.
    #[arg(long, value_name = "ID")]
    backup: Option<String>,
    /// Recover up to this time (with a zone, e.g. "2026-11-23 03:12:00+00").
    #[arg(long, value_name = "TIME", group = "target")]
    target_time: Option<String>,
    /// Recover up to this LSN (e.g. 0/3000060).
    #[arg(long, value_name = "LSN", group = "target")]
    target_lsn: Option<String>,
    /// Recover up to and including this transaction id.
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
    /// Bundles unpacked at once (overrides [restore] parallel).
    #[arg(long)]
    parallel: Option<usize>,
}

pub async fn init(ctx: &Context) -> Result<()> {
    let config = ctx.config()?;
    let mut conn = server::connect(&config, true).await?;
    let (identity, _) = server::cluster_identity(&mut conn, &config).await?;
    let _ = conn.close().await;
    let (repo, created) = Repository::init(&config, identity.clone(), None).await?;
    let enc = if repo.is_encrypted() { "encrypted (AES-256-GCM)" } else { "NOT encrypted" };
    if created {
        println!(
            "initialized repository {} for cluster {} (PostgreSQL {}, {} WAL segments), {enc}",
            repo.storage(),
            identity.system_identifier,
            identity.major(),
            display::bytes(identity.wal_segment_size)
        );
        if !repo.is_encrypted() {
            eprintln!("pgvault: note: backups in this repository are stored unencrypted; set [encryption] passphrase_file to encrypt a new repository");
        }
    } else {
        println!("repository {} already initialized for this cluster, {enc}", repo.storage());
    }
    Ok(())
}

pub async fn backup(ctx: &Context, args: BackupArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let mut opts = BackupOptions::from_config(&config);
    opts.include_wal |= args.include_wal;
    opts.label = args.label;
    if let Some(s) = args.archive_wait_timeout {
        opts.archive_wait = std::time::Duration::from_secs(s);
    }
    let started = Instant::now();
    let bar = progress::for_terminal(ctx.show_progress);
    let cat = backup::run(&config, &repo, &opts, bar).await?;
    println!(
        "backup {} complete: {} in {} files, stored {} ({}{}), WAL {}..{}{}, took {}",
        cat.id,
        display::bytes(cat.size),
        cat.files.len(),
        display::bytes(cat.stored_size),
        cat.compression,
        if cat.encrypted { ", encrypted" } else { "" },
        cat.start_wal,
        cat.stop_wal,
        if cat.wal_included { " (included)" } else { "" },
        display::seconds(started.elapsed())
    );
    if let Some(mib) = display::peak_memory_mib() {
        tracing::info!("peak memory {mib} MiB");
    }
    Ok(())
}

fn backup_json(b: &BackupCatalog) -> serde_json::Value {
    json!({
        "id": b.id,
        "label": b.label,
        "kind": "full",
        "timeline": b.timeline,
        "start_lsn": b.start_lsn.to_string(),
        "stop_lsn": b.stop_lsn.to_string(),
        "start_time": b.start_time.to_rfc3339(),
        "stop_time": b.stop_time.to_rfc3339(),
        "start_wal": b.start_wal,
        "stop_wal": b.stop_wal,
        "wal_included": b.wal_included,
        "size": b.size,
        "stored_size": b.stored_size,
        "files": b.files.len(),
        "pg_version_num": b.pg_version_num,
        "encrypted": b.encrypted,
        "compression": b.compression,
    })
}

pub async fn list(ctx: &Context, args: ListArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let backups = repo.list_backups().await?;
    let wal = repo.list_wal().await?;
    let reach = restore::archive_reach(&repo).await?;
    let segments: Vec<_> = wal.iter().filter(|(n, _)| n.has_page_header()).collect();
    let window_from = backups.first().map(|b| b.stop_time);
    let window_to = match (reach.newest_wal_time, backups.last()) {
        (Some(t), Some(b)) => Some(t.max(b.stop_time)),
        (None, Some(b)) => Some(b.stop_time),
        _ => None,
    };
    if args.json {
        let out = json!({
            "repository": repo.storage().to_string(),
            "system_identifier": repo.cluster().system_identifier.to_string(),
            "pg_version_num": repo.cluster().pg_version_num,
            "encrypted": repo.is_encrypted(),
            "backups": backups.iter().map(backup_json).collect::<Vec<_>>(),
            "wal": {
                "segments": segments.len(),
                "first": segments.first().map(|s| s.0.to_string()),
                "last": segments.last().map(|s| s.0.to_string()),
                "newest_archived_time": reach.newest_wal_time.map(|t| t.to_rfc3339()),
                "newest_lsn": reach.newest_wal_end.map(|l: Lsn| l.to_string()),
            },
            "recoverable_window": {
                "from": window_from.map(|t| t.to_rfc3339()),
                "to": window_to.map(|t| t.to_rfc3339()),
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("repository {} (cluster {}, PostgreSQL {})", repo.storage(), repo.cluster().system_identifier, repo.cluster().major());
    if backups.is_empty() {
        println!("no backups yet: run `pgvault backup`");
    } else {
        println!("{:<17} {:<3} {:<25} {:<25} {:<23} {:>10} {:>10}", "BACKUP", "TLI", "STARTED", "FINISHED", "LSN RANGE", "SIZE", "STORED");
        for b in &backups {
            println!(
                "{:<17} {:<3} {:<25} {:<25} {:<23} {:>10} {:>10}{}",
                b.id,
                b.timeline,
                b.start_time.format("%Y-%m-%d %H:%M:%S%:z").to_string(),
                b.stop_time.format("%Y-%m-%d %H:%M:%S%:z").to_string(),
                format!("{}-{}", b.start_lsn, b.stop_lsn),
                display::bytes(b.size),
                display::bytes(b.stored_size),
                if b.wal_included { "  (WAL included)" } else { "" }
            );
        }
    }
    match (segments.first(), segments.last()) {
        (Some(f), Some(l)) => println!("WAL archive: {} segments, {} .. {}", segments.len(), f.0, l.0),
        _ => println!("WAL archive: empty"),
    }
    if let (Some(from), Some(to)) = (window_from, window_to) {
        println!("recoverable window: {} .. {}", from.to_rfc3339(), to.to_rfc3339());
    }
    Ok(())
}

pub async fn info(ctx: &Context, args: ListArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let m = repo.meta();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
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
            }))?
        );
        return Ok(());
    }
    println!("repository      {}", repo.storage());
    println!("id              {}", m.repository_id);
    println!("format          version {}", m.format_version);
    println!("created         {} by {}", m.created_at.to_rfc3339(), m.created_by);
    println!("cluster         {} (PostgreSQL {}, {} WAL segments)", m.cluster.system_identifier, m.cluster.major(), display::bytes(m.cluster.wal_segment_size));
    println!("encryption      {}", if repo.is_encrypted() { "AES-256-GCM, Argon2id-wrapped key" } else { "none" });
    println!("compression     {}", repo.compression_name());
    println!("WAL push mode   {}", repo.wal_push_mode().description());
    Ok(())
}

pub async fn copy(ctx: &Context, args: CopyArgs) -> Result<()> {
    let config = ctx.config()?;
    let target_config = Config::load(Some(&args.to)).with_context(|| format!("target configuration (--to {})", args.to.display()))?;
    for w in &target_config.warnings {
        eprintln!("pgvault: warning: {w}");
    }
    let repo = Repository::open(&config).await?;
    let opts = CopyOptions { dry_run: args.dry_run, parallel: args.parallel.clamp(1, 64) };
    let started = Instant::now();
    let bar = progress::for_terminal(ctx.show_progress && !args.dry_run);
    let summary = pgvault_core::copy::run(&repo, &target_config, &opts, bar).await?;
    if args.dry_run {
        for item in &summary.plan {
            match item {
                PlanItem::Backup { id, objects, bytes, objects_present } => println!(
                    "would copy backup {id}: {objects} object(s), {}{}",
                    display::bytes(*bytes),
                    if *objects_present > 0 { format!(" ({objects_present} already there from an earlier run)") } else { String::new() }
                ),
                PlanItem::Wal { name, bytes } => println!("would copy WAL {name} ({})", display::bytes(*bytes)),
            }
        }
        println!("dry run: {}", summary.one_line());
    } else {
        println!("{}, took {}", summary.one_line(), display::seconds(started.elapsed()));
    }
    Ok(())
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

pub async fn restore(ctx: &Context, args: RestoreArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let target = if let Some(t) = &args.target_time {
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
    };
    let pgdata = std::path::absolute(&args.pgdata).unwrap_or(args.pgdata.clone());
    let req = RestoreRequest {
        pgdata: pgdata.clone(),
        backup: args.backup,
        target: target.clone(),
        action: args.target_action,
        timeline: args.target_timeline,
        tablespace_map: args.tablespace_map,
        // Defaults until the CLI grows --link-map, --archive-mode and --type (lead's part).
        link_map: Vec::new(),
        archive_mode: restore::ArchiveMode::Preserve,
        kind: restore::RestoreType::Default,
        parallel: args.parallel.unwrap_or(config.restore.parallel),
        archive_command: archive_command_path(&config)?,
    };
    let started = Instant::now();
    let bar = progress::for_terminal(ctx.show_progress);
    let summary = restore::run(&config, &repo, &req, bar).await?;
    println!(
        "restored backup {} into {}: {} in {} files, took {}",
        summary.backup_id,
        pgdata.display(),
        display::bytes(summary.bytes),
        summary.files,
        display::seconds(started.elapsed())
    );
    for (oid, loc) in &summary.tablespaces {
        println!("  tablespace {oid} -> {}", loc.display());
    }
    println!(
        "recovery will replay WAL to {} and then {}; start the server with: pg_ctl -D {} start",
        restore::target::describe(&target),
        match target {
            Target::End => "promote",
            _ => req.action.as_str(),
        },
        pgdata.display()
    );
    Ok(())
}
