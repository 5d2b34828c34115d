//! The rules table: one entry per setting, with its section, its formula (a small fn over the
//! inputs and the shared [`Sizing`]), the one-line reason it gives and the reference it follows.
//! Adding a setting is adding an entry; docs/TUNE.md lists the same table for people.

use std::path::Path;

use super::formulas::*;
use super::sizing::{self, Sizing};
use super::{Inputs, Recommendation, Typed, Workload};

/// What a formula sees.
pub struct Ctx<'a> {
    pub inputs: &'a Inputs,
    pub sizing: Sizing,
    pub archive_config: Option<&'a Path>,
}

/// A formula: the value and the reason, or `None` when the setting does not apply (e.g.
/// `summarize_wal` before PostgreSQL 17).
pub type Formula = fn(&Ctx) -> Option<(Typed, String)>;

/// One rule.
pub struct Rule {
    pub section: &'static str,
    pub name: &'static str,
    /// `pg_settings.context = 'postmaster'`: takes effect at the next restart.
    pub restart: bool,
    /// The value is a floor: a server with more already complies (`max_wal_senders`).
    pub at_least: bool,
    pub reference: &'static str,
    pub formula: Formula,
}

/// Every rule, in output order.
pub static RULES: &[Rule] = &[
    Rule {
        section: "connections",
        name: "max_connections",
        restart: true,
        at_least: false,
        reference: "docs runtime-config-connection; wiki Number_Of_Database_Connections",
        formula: max_connections,
    },
    Rule {
        section: "memory",
        name: "shared_buffers",
        restart: true,
        at_least: false,
        reference: "docs runtime-config-resource#GUC-SHARED-BUFFERS (25% of RAM); pgtune RAM/4",
        formula: |c| Some((Typed::Bytes(c.sizing.shared_buffers), shared_buffers_reason(c))),
    },
    Rule {
        section: "memory",
        name: "huge_pages",
        restart: true,
        at_least: false,
        reference: "docs kernel-resources#LINUX-HUGE-PAGES; pgtune (try from 32GB)",
        formula: huge_pages,
    },
    Rule {
        section: "memory",
        name: "effective_cache_size",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-query#GUC-EFFECTIVE-CACHE-SIZE; pgtune RAM×3/4",
        formula: |c| {
            Some((
                Typed::Bytes(c.sizing.effective_cache_size),
                format!(
                    "75% of {}: what shared_buffers and the OS page cache hold, for the planner only",
                    mem(c)
                ),
            ))
        },
    },
    Rule {
        section: "memory",
        name: "work_mem",
        restart: false,
        at_least: false,
        reference: "pgtune: (RAM − shared_buffers) / (max_connections × 3) / workers per gather (÷2 mixed, dw)",
        formula: work_mem,
    },
    Rule {
        section: "memory",
        name: "maintenance_work_mem",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-resource#GUC-MAINTENANCE-WORK-MEM; pgtune RAM/16 (dw RAM/8), at most 2GB",
        formula: maintenance_work_mem,
    },
    Rule {
        section: "wal",
        name: "wal_buffers",
        restart: true,
        at_least: false,
        reference: "docs runtime-config-wal#GUC-WAL-BUFFERS (-1: 1/32 of shared_buffers, at most a segment); pgtune 3%",
        formula: |c| {
            Some((
                Typed::Bytes(c.sizing.wal_buffers),
                format!(
                    "3% of shared_buffers ({}), at most one 16MB WAL segment",
                    size(c.sizing.shared_buffers)
                ),
            ))
        },
    },
    Rule {
        section: "wal",
        name: "min_wal_size",
        restart: false,
        at_least: false,
        reference: "docs wal-configuration; pgtune per workload",
        formula: |c| {
            let (min, _) = wal_sizes(c.inputs.workload);
            Some((
                Typed::Bytes(min),
                format!(
                    "WAL kept for reuse after checkpoints, sized for {} bursts",
                    c.inputs.workload.as_str()
                ),
            ))
        },
    },
    Rule {
        section: "wal",
        name: "max_wal_size",
        restart: false,
        at_least: false,
        reference: "docs wal-configuration; pgtune per workload",
        formula: |c| {
            let (_, max) = wal_sizes(c.inputs.workload);
            Some((
                Typed::Bytes(max),
                format!(
                    "checkpoints by time, not forced by WAL volume, under {} load (fewer full-page writes)",
                    c.inputs.workload.as_str()
                ),
            ))
        },
    },
    Rule {
        section: "wal",
        name: "checkpoint_completion_target",
        restart: false,
        at_least: false,
        reference: "docs wal-configuration (default 0.9 since 14); pgtune",
        formula: |_| {
            Some((
                Typed::Real(900),
                "spread checkpoint writes over 90% of the interval: no I/O spikes".into(),
            ))
        },
    },
    Rule {
        section: "wal",
        name: "wal_compression",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-wal#GUC-WAL-COMPRESSION",
        formula: |_| {
            Some((
                Typed::Bool(true),
                "compress full-page images: less WAL to write, archive and keep".into(),
            ))
        },
    },
    Rule {
        section: "planner",
        name: "random_page_cost",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-query#GUC-RANDOM-PAGE-COST; pgtune (ssd/san 1.1, hdd 4)",
        formula: random_page_cost,
    },
    Rule {
        section: "planner",
        name: "effective_io_concurrency",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-resource#GUC-EFFECTIVE-IO-CONCURRENCY; pgtune (ssd 200, san 300, hdd 2)",
        formula: effective_io_concurrency,
    },
    Rule {
        section: "planner",
        name: "default_statistics_target",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-query#GUC-DEFAULT-STATISTICS-TARGET; pgtune (dw 500)",
        formula: |c| {
            Some(if c.inputs.workload == Workload::Dw {
                (
                    Typed::Integer(500),
                    "larger samples for a warehouse's skewed columns and long plans".into(),
                )
            } else {
                (
                    Typed::Integer(100),
                    "PostgreSQL's default sample size suits short queries".into(),
                )
            })
        },
    },
    Rule {
        section: "parallelism",
        name: "max_worker_processes",
        restart: true,
        at_least: true,
        reference: "docs runtime-config-resource (asynchronous behavior); pgtune (cpus), at least the default 8",
        formula: |c| {
            Some((
                Typed::Integer(c.sizing.max_worker_processes.into()),
                format!(
                    "one per CPU ({}), at least 8 for logical replication and extension workers",
                    c.inputs.cpus
                ),
            ))
        },
    },
    Rule {
        section: "parallelism",
        name: "max_parallel_workers",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-resource (asynchronous behavior); pgtune (cpus)",
        formula: |c| {
            Some((
                Typed::Integer(c.sizing.max_parallel_workers.into()),
                format!("parallel query workers in all: one per CPU ({})", c.inputs.cpus),
            ))
        },
    },
    Rule {
        section: "parallelism",
        name: "max_parallel_workers_per_gather",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-resource (asynchronous behavior); pgtune ceil(cpus/2), at most 4 except dw",
        formula: |c| Some((Typed::Integer(c.sizing.workers_per_gather.into()), per_gather_reason(c))),
    },
    Rule {
        section: "parallelism",
        name: "max_parallel_maintenance_workers",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-resource (asynchronous behavior); pgtune ceil(cpus/2), at most 4",
        formula: |c| {
            Some((
                Typed::Integer(c.sizing.maintenance_workers.into()),
                "workers for CREATE INDEX and VACUUM: half the CPUs, at most 4".into(),
            ))
        },
    },
    Rule {
        section: "backups",
        name: "wal_level",
        restart: true,
        at_least: false,
        reference: "docs continuous-archiving#BACKUP-ARCHIVING-WAL",
        formula: |_| {
            Some((
                Typed::Text("replica".into()),
                "archiving and pgvault's base backups need at least replica".into(),
            ))
        },
    },
    Rule {
        section: "backups",
        name: "archive_mode",
        restart: true,
        at_least: false,
        reference: "docs continuous-archiving#BACKUP-ARCHIVING-WAL",
        formula: |_| {
            Some((
                Typed::Bool(true),
                "every WAL segment goes to the repository: point-in-time recovery".into(),
            ))
        },
    },
    Rule {
        section: "backups",
        name: "archive_command",
        restart: false,
        at_least: false,
        reference: "docs continuous-archiving; pgvault docs/ARCHIVING.md",
        formula: archive_command,
    },
    Rule {
        section: "backups",
        name: "archive_timeout",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-wal#GUC-ARCHIVE-TIMEOUT (a minute or so is usually reasonable)",
        formula: archive_timeout,
    },
    Rule {
        section: "backups",
        name: "max_wal_senders",
        restart: true,
        at_least: true,
        reference: "docs runtime-config-replication#GUC-MAX-WAL-SENDERS (default 10)",
        formula: |_| {
            Some((
                Typed::Integer(10),
                "at least 3: pgvault's replication connection for base backups, plus standbys".into(),
            ))
        },
    },
    Rule {
        section: "backups",
        name: "summarize_wal",
        restart: false,
        at_least: false,
        reference: "docs runtime-config-wal#GUC-SUMMARIZE-WAL (17+)",
        formula: |c| match c.inputs.server_major {
            Some(v) if v >= 17 => Some((
                Typed::Bool(true),
                "WAL summaries: the basis of incremental backups on 17+".into(),
            )),
            _ => None,
        },
    },
];

/// Applies every rule.
pub fn evaluate(inputs: &Inputs, archive_config: Option<&Path>) -> Vec<Recommendation> {
    let ctx = Ctx {
        inputs,
        sizing: sizing::compute(inputs),
        archive_config,
    };
    RULES
        .iter()
        .filter_map(|r| {
            let (typed, reason) = (r.formula)(&ctx)?;
            Some(Recommendation {
                name: r.name,
                value: typed.render(),
                reason,
                reference: r.reference,
                typed,
                restart: r.restart,
                at_least: r.at_least,
            })
        })
        .collect()
}

/// The section a setting belongs to (for grouping output).
pub fn section_of(name: &str) -> &'static str {
    RULES.iter().find(|r| r.name == name).map_or("other", |r| r.section)
}
