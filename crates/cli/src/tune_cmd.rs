//! `pgvault tune`: recommended `postgresql.conf` settings for this machine (or the one described
//! by flags), as an include file, `ALTER SYSTEM` statements or JSON; with `--diff`, what a
//! running server (the configuration's `[postgres]`) has differently.
//!
//! It only connects with `--diff`: printing advice never waits on a server. The formulas and
//! their references are in `pgvault_ops::tune` and docs/TUNE.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use pgvault_core::config::Config;
use pgvault_core::{server, units};
use pgvault_ops::tune::render::{self, Current, Format};
use pgvault_ops::tune::{machine, recommend_with_config, Inputs, Storage, Workload};
use serde_json::json;

use crate::commands::Context;
use crate::verify_cmd::ExitStatus;

/// The RPO when neither `--rpo` nor `[objectives] rpo` gives one (the reviewed set-ups' target).
const DEFAULT_RPO: Duration = Duration::from_secs(300);

#[derive(Args)]
pub struct TuneArgs {
    /// Memory for PostgreSQL in PostgreSQL's units (`32GB`); default: detected (cgroup, then /proc).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// CPUs; default: detected (cgroup quota, then the CPUs this process may use).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    cpus: Option<u32>,
    /// What the data directory is on: ssd, hdd or network.
    #[arg(long, default_value = "ssd", value_name = "KIND", value_parser = parse_storage)]
    storage: Storage,
    /// What the server mostly does: web, oltp, dw or mixed.
    #[arg(long, default_value = "mixed", value_name = "KIND", value_parser = parse_workload)]
    workload: Workload,
    /// Expected client connections.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Clients connect through a pooler (PgBouncer): the server needs fewer connections.
    #[arg(long)]
    pooler: bool,
    /// Output: conf (a postgresql.conf include), sql (ALTER SYSTEM statements) or json.
    #[arg(long, default_value = "conf", value_name = "FORMAT", value_parser = parse_format)]
    format: Format,
    /// Recovery-point objective (`5min`); default [objectives] rpo, else 5min.
    #[arg(long, value_name = "DURATION", value_parser = crate::verify_cmd::parse_duration)]
    rpo: Option<Duration>,
    /// Server major version (17+ adds summarize_wal); with --diff read from the server.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(10..=99))]
    pg_version: Option<u32>,
    /// Compare with the running server of the configuration ([postgres]): only what differs.
    #[arg(long)]
    diff: bool,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    units::parse_size(s).map_err(|e| e.to_string())
}

pub fn parse_storage(s: &str) -> Result<Storage, String> {
    s.parse().map_err(|e: pgvault_ops::tune::TuneError| e.to_string())
}

pub fn parse_workload(s: &str) -> Result<Workload, String> {
    s.parse().map_err(|e: pgvault_ops::tune::TuneError| e.to_string())
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse().map_err(|e: pgvault_ops::tune::TuneError| e.to_string())
}

/// A usage error found after parsing: message on stderr, exit 2.
fn usage(msg: impl std::fmt::Display) -> anyhow::Error {
    crate::logging::error(&format!("tune: {msg}"), None);
    ExitStatus(2).into()
}

pub async fn tune(ctx: &Context, args: TuneArgs) -> Result<()> {
    // The configuration is optional unless --diff needs its server; a named one must load.
    let config = match Config::load(ctx.config_path.as_deref()) {
        Ok(c) => Some(c),
        Err(e) if args.diff || ctx.config_path.is_some() => return Err(e).context("reading the configuration"),
        Err(_) => None,
    };
    let mut notes = Vec::new();
    let detected = machine::detect();
    let (memory_bytes, memory_from) = match args.memory {
        Some(m) => (m, "flag"),
        None => (
            detected
                .memory_bytes
                .context("cannot detect the memory (no cgroup limit, no /proc/meminfo); give --memory")?,
            detected.memory_source.as_str(),
        ),
    };
    let (cpus, cpus_from) = match args.cpus {
        Some(c) => (c, "flag"),
        None => (detected.cpus, detected.cpu_source.as_str()),
    };
    if args.memory.is_none() || args.cpus.is_none() {
        notes.push(format!(
            "memory {} from {memory_from}, {cpus} CPUs from {cpus_from}",
            units::format_size_rough(memory_bytes)
        ));
    }
    let rpo = match args.rpo {
        Some(r) => r,
        None => config_rpo(config.as_ref(), &mut notes),
    };
    let mut inputs = Inputs {
        memory_bytes,
        cpus,
        storage: args.storage,
        workload: args.workload,
        connections: args.connections,
        pooler: args.pooler,
        rpo,
        server_major: args.pg_version,
    };
    inputs.validate().map_err(usage)?;
    let archive_config = config
        .as_ref()
        .map(|_| absolute(&Config::locate(ctx.config_path.as_deref())));
    let current = match (&config, args.diff) {
        (Some(c), true) => {
            let (major, rows) = read_server(c).await?;
            inputs.server_major = Some(major);
            Some(rows)
        }
        _ => None,
    };
    if inputs.server_major.is_none() {
        notes.push("server version unknown: on PostgreSQL 17+ also summarize_wal = on (give --pg-version)".into());
    }
    let recs = recommend_with_config(&inputs, archive_config.as_deref());
    let extra = json!({ "memory_source": memory_from, "cpu_source": cpus_from, "notes": notes });
    match (current, args.format) {
        (Some(rows), Format::Json) => {
            let mut v = render::json(&inputs, &recs, extra);
            v["diff"] = serde_json::to_value(render::diff(&recs, &rows))?;
            crate::display::print_json(&v)?;
        }
        (Some(rows), _) => print!("{}", render::diff_text(&render::diff(&recs, &rows), recs.len())),
        (None, Format::Json) => crate::display::print_json(&render::json(&inputs, &recs, extra))?,
        (None, Format::Conf) => print!("{}", render::conf(&inputs, &recs, &notes)),
        (None, Format::Sql) => print!("{}", render::sql(&inputs, &recs, &notes)),
    }
    Ok(())
}

/// `[objectives] rpo`, else the default (noted either way it is not a flag).
fn config_rpo(config: Option<&Config>, notes: &mut Vec<String>) -> Duration {
    let Some(text) = config.and_then(|c| c.objectives.rpo.as_deref()) else {
        return DEFAULT_RPO;
    };
    match units::parse_duration(text) {
        Ok(d) => {
            notes.push(format!("RPO {text} from [objectives] rpo"));
            d
        }
        Err(e) => {
            crate::logging::warn(&format!("[objectives] rpo: {e}; using 5min"));
            DEFAULT_RPO
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The server's major version and the `pg_settings` rows of every setting tune knows.
async fn read_server(config: &Config) -> Result<(u32, Vec<Current>)> {
    let mut conn = server::connect(config, false).await?;
    let major = conn.server_version_num() / 10_000;
    let names: Vec<String> = pgvault_ops::tune::rules::RULES
        .iter()
        .map(|r| format!("'{}'", r.name))
        .collect();
    let sql = format!(
        "SELECT name, setting, coalesce(unit, ''), current_setting(name) FROM pg_settings WHERE name IN ({})",
        names.join(", ")
    );
    let rows = conn.simple_query(&sql).await.context("reading pg_settings")?;
    let _ = conn.close().await;
    let current = rows
        .into_iter()
        .filter_map(|row| {
            let mut it = row.into_iter();
            let (name, setting, unit, display) = (it.next()??, it.next()??, it.next()??, it.next()??);
            Some(Current {
                name,
                setting,
                unit: Some(unit).filter(|u| !u.is_empty()),
                display,
            })
        })
        .collect();
    Ok((major, current))
}
