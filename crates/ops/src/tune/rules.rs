//! The rules table: one entry per setting, with its section, its formula (a small fn over the
//! inputs and the shared [`Sizing`]), the one-line reason it gives and the reference it follows.
//! Adding a setting is adding an entry; docs/TUNE.md lists the same table for people.

use std::path::Path;
use std::time::Duration;

use pgvault_core::units::{format_duration, format_size};

use super::sizing::{self, Sizing, GB, HUGE_PAGES_FROM, MB};
use super::{Inputs, Recommendation, Storage, Typed, Workload};

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
    pub reference: &'static str,
    pub formula: Formula,
}


/// Every rule, in output order.
pub static RULES: &[Rule] = &[
    Rule { section: "connections", name: "max_connections", restart: true,
        reference: "docs runtime-config-connection; wiki Number_Of_Database_Connections",
        formula: max_connections },
    Rule { section: "memory", name: "shared_buffers", restart: true,
        reference: "docs runtime-config-resource#GUC-SHARED-BUFFERS (25% of RAM); pgtune RAM/4",
        formula: |c| Some((Typed::Bytes(c.sizing.shared_buffers), shared_buffers_reason(c))) },
    Rule { section: "memory", name: "huge_pages", restart: true,
        reference: "docs kernel-resources#LINUX-HUGE-PAGES; pgtune (try from 32GB)",
        formula: huge_pages },
    Rule { section: "memory", name: "effective_cache_size", restart: false,
        reference: "docs runtime-config-query#GUC-EFFECTIVE-CACHE-SIZE; pgtune RAM×3/4",
        formula: |c| Some((Typed::Bytes(c.sizing.effective_cache_size),
            format!("75% of {}: what shared_buffers and the OS page cache hold, for the planner only", mem(c)))) },
    Rule { section: "memory", name: "work_mem", restart: false,
        reference: "pgtune: (RAM − shared_buffers) / (max_connections × 3) / workers per gather (÷2 mixed, dw)",
        formula: work_mem },
    Rule { section: "memory", name: "maintenance_work_mem", restart: false,
        reference: "docs runtime-config-resource#GUC-MAINTENANCE-WORK-MEM; pgtune RAM/16 (dw RAM/8), at most 2GB",
        formula: maintenance_work_mem },
    Rule { section: "wal", name: "wal_buffers", restart: true,
        reference: "docs runtime-config-wal#GUC-WAL-BUFFERS (-1: 1/32 of shared_buffers, at most a segment); pgtune 3%",
        formula: |c| Some((Typed::Bytes(c.sizing.wal_buffers),
            format!("3% of shared_buffers ({}), at most one 16MB WAL segment", size(c.sizing.shared_buffers)))) },
    Rule { section: "wal", name: "min_wal_size", restart: false,
        reference: "docs wal-configuration; pgtune per workload",
        formula: |c| { let (min, _) = wal_sizes(c.inputs.workload);
            Some((Typed::Bytes(min), format!("WAL kept for reuse after checkpoints, sized for a {} workload's bursts", c.inputs.workload.as_str()))) } },
    Rule { section: "wal", name: "max_wal_size", restart: false,
        reference: "docs wal-configuration; pgtune per workload",
        formula: |c| { let (_, max) = wal_sizes(c.inputs.workload);
            Some((Typed::Bytes(max), format!("checkpoints by time, not forced by WAL volume, under a {} workload (fewer full-page writes)", c.inputs.workload.as_str()))) } },
    Rule { section: "wal", name: "checkpoint_completion_target", restart: false,
        reference: "docs wal-configuration (default 0.9 since 14); pgtune",
        formula: |_| Some((Typed::Real(900), "spread checkpoint writes over 90% of the interval: no I/O spikes".into())) },
    Rule { section: "wal", name: "wal_compression", restart: false,
        reference: "docs runtime-config-wal#GUC-WAL-COMPRESSION",
        formula: |_| Some((Typed::Bool(true), "compress full-page images: less WAL to write, archive and keep".into())) },
    Rule { section: "planner", name: "random_page_cost", restart: false,
        reference: "docs runtime-config-query#GUC-RANDOM-PAGE-COST; pgtune (ssd/san 1.1, hdd 4)",
        formula: random_page_cost },
    Rule { section: "planner", name: "effective_io_concurrency", restart: false,
        reference: "docs runtime-config-resource#GUC-EFFECTIVE-IO-CONCURRENCY; pgtune (ssd 200, san 300, hdd 2)",
        formula: effective_io_concurrency },
    Rule { section: "planner", name: "default_statistics_target", restart: false,
        reference: "docs runtime-config-query#GUC-DEFAULT-STATISTICS-TARGET; pgtune (dw 500)",
        formula: |c| Some(if c.inputs.workload == Workload::Dw {
            (Typed::Integer(500), "larger samples for a warehouse's skewed columns and long plans".into())
        } else {
            (Typed::Integer(100), "PostgreSQL's default sample size suits short queries".into())
        }) },
    Rule { section: "parallelism", name: "max_worker_processes", restart: true,
        reference: "docs runtime-config-resource (asynchronous behavior); pgtune (cpus), at least the default 8",
        formula: |c| Some((Typed::Integer(c.sizing.max_worker_processes.into()),
            format!("one per CPU ({}), at least 8 for logical replication and extension workers", c.inputs.cpus))) },
    Rule { section: "parallelism", name: "max_parallel_workers", restart: false,
        reference: "docs runtime-config-resource (asynchronous behavior); pgtune (cpus)",
        formula: |c| Some((Typed::Integer(c.sizing.max_parallel_workers.into()),
            format!("parallel query workers in all: one per CPU ({})", c.inputs.cpus))) },
    Rule { section: "parallelism", name: "max_parallel_workers_per_gather", restart: false,
        reference: "docs runtime-config-resource (asynchronous behavior); pgtune ceil(cpus/2), at most 4 except dw",
        formula: |c| Some((Typed::Integer(c.sizing.workers_per_gather.into()), per_gather_reason(c))) },
    Rule { section: "parallelism", name: "max_parallel_maintenance_workers", restart: false,
        reference: "docs runtime-config-resource (asynchronous behavior); pgtune ceil(cpus/2), at most 4",
        formula: |c| Some((Typed::Integer(c.sizing.maintenance_workers.into()),
            "workers for CREATE INDEX and VACUUM: half the CPUs, at most 4".into())) },
    Rule { section: "backups", name: "wal_level", restart: true,
        reference: "docs continuous-archiving#BACKUP-ARCHIVING-WAL",
        formula: |_| Some((Typed::Text("replica".into()), "archiving and pgvault's base backups need at least replica".into())) },
    Rule { section: "backups", name: "archive_mode", restart: true,
        reference: "docs continuous-archiving#BACKUP-ARCHIVING-WAL",
        formula: |_| Some((Typed::Bool(true), "every WAL segment goes to the repository: point-in-time recovery".into())) },
    Rule { section: "backups", name: "archive_command", restart: false,
        reference: "docs continuous-archiving; pgvault docs/ARCHIVING.md",
        formula: archive_command },
    Rule { section: "backups", name: "archive_timeout", restart: false,
        reference: "docs runtime-config-wal#GUC-ARCHIVE-TIMEOUT (a minute or so is usually reasonable)",
        formula: archive_timeout },
    Rule { section: "backups", name: "max_wal_senders", restart: true,
        reference: "docs runtime-config-replication#GUC-MAX-WAL-SENDERS (default 10)",
        formula: |_| Some((Typed::Integer(10), "at least 3: pgvault's replication connection for base backups, plus standbys".into())) },
    Rule { section: "backups", name: "summarize_wal", restart: false,
        reference: "docs runtime-config-wal#GUC-SUMMARIZE-WAL (17+)",
        formula: |c| match c.inputs.server_major {
            Some(v) if v >= 17 => Some((Typed::Bool(true), "WAL summaries: the basis of incremental backups on 17+".into())),
            _ => None,
        } },
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
            })
        })
        .collect()
}

/// The section a setting belongs to (for grouping output).
pub fn section_of(name: &str) -> &'static str {
    RULES.iter().find(|r| r.name == name).map_or("other", |r| r.section)
}

fn size(b: u64) -> String {
    format_size(b)
}

fn mem(c: &Ctx) -> String {
    pgvault_core::units::format_size_rough(c.sizing.ram)
}

fn max_connections(c: &Ctx) -> Option<(Typed, String)> {
    let s = &c.sizing;
    let i = c.inputs;
    let reason = match (s.connections_cut_from, i.pooler) {
        (Some(from), _) => format!(
            "{from} connections do not fit in {} even at work_mem 64kB: at most {}; put a pooler in front",
            mem(c),
            s.connections
        ),
        (None, true) if s.connections < i.connections => format!(
            "behind a pooler: about 4 server connections per CPU (at least 20) serve {} clients",
            i.connections
        ),
        (None, true) => format!("behind a pooler: the {} clients stated, no more needed", i.connections),
        (None, false) => format!("the {} direct connections stated", i.connections),
    };
    Some((Typed::Integer(s.connections.into()), reason))
}

fn shared_buffers_reason(c: &Ctx) -> String {
    if c.sizing.shared_buffers < c.sizing.ram / 4 / MB * MB {
        format!("25% of {}, capped at 32GB: the OS cache serves the rest", mem(c))
    } else {
        format!("25% of {}: PostgreSQL's own cache; the OS page cache holds the rest", mem(c))
    }
}

fn huge_pages(c: &Ctx) -> Option<(Typed, String)> {
    if c.sizing.ram >= HUGE_PAGES_FROM {
        // 2MB pages for shared_buffers plus ~3% for the rest of shared memory.
        let pages = (c.sizing.shared_buffers + c.sizing.shared_buffers * 3 / 100).div_ceil(2 * MB);
        Some((
            Typed::Text("try".into()),
            format!(
                "large shared memory: reserve ~{pages} 2MB pages (vm.nr_hugepages; exact: postgres -C shared_memory_size_in_huge_pages)"
            ),
        ))
    } else {
        Some((
            Typed::Text("off".into()),
            "shared memory under 8GB: huge pages gain little, and the kernel need not reserve them".into(),
        ))
    }
}

fn work_mem(c: &Ctx) -> Option<(Typed, String)> {
    let s = &c.sizing;
    let halved = matches!(c.inputs.workload, Workload::Dw | Workload::Mixed);
    let reason = format!(
        "{} for sorts/hashes ÷ ({} connections × 3 × {} workers per gather){}: stays within RAM",
        size(s.work_mem_budget() / MB * MB),
        s.connections,
        s.parallel_factor(),
        if halved { " ÷ 2 for larger queries" } else { "" }
    );
    Some((Typed::Bytes(s.work_mem), reason))
}

fn maintenance_work_mem(c: &Ctx) -> Option<(Typed, String)> {
    let share = if c.inputs.workload == Workload::Dw { "1/8" } else { "1/16" };
    let capped = c.sizing.maintenance_work_mem == sizing::MAINTENANCE_CAP;
    Some((
        Typed::Bytes(c.sizing.maintenance_work_mem),
        format!(
            "{share} of {}{}: faster VACUUM and CREATE INDEX",
            mem(c),
            if capped { ", at most 2GB" } else { "" }
        ),
    ))
}

/// (min_wal_size, max_wal_size) per workload, pgtune's pairs.
fn wal_sizes(w: Workload) -> (u64, u64) {
    match w {
        Workload::Web | Workload::Mixed => (GB, 4 * GB),
        Workload::Oltp => (2 * GB, 8 * GB),
        Workload::Dw => (4 * GB, 16 * GB),
    }
}

fn random_page_cost(c: &Ctx) -> Option<(Typed, String)> {
    Some(match c.inputs.storage {
        Storage::Ssd => (Typed::Real(1100), "SSD: random reads cost about as much as sequential ones".into()),
        Storage::Network => (
            Typed::Real(1100),
            "network block storage (SAN, EBS, PD): random reads about as cheap as sequential".into(),
        ),
        Storage::Hdd => (Typed::Real(4000), "spinning disks: a random read costs a seek (the default)".into()),
    })
}

fn effective_io_concurrency(c: &Ctx) -> Option<(Typed, String)> {
    Some(match c.inputs.storage {
        Storage::Ssd => (Typed::Integer(200), "SSDs serve many reads in parallel".into()),
        Storage::Network => (Typed::Integer(300), "network storage: deep queues hide the latency".into()),
        Storage::Hdd => (Typed::Integer(2), "spinning disks: few concurrent reads help".into()),
    })
}

fn per_gather_reason(c: &Ctx) -> String {
    match c.sizing.workers_per_gather {
        0 => "one CPU: no parallel query".into(),
        n if c.inputs.workload == Workload::Dw => format!("half the {} CPUs ({n}) per query: a warehouse scans big tables", c.inputs.cpus),
        n => format!("half the {} CPUs, at most 4 ({n}): parallel scans without starving other queries", c.inputs.cpus),
    }
}

fn archive_command(c: &Ctx) -> Option<(Typed, String)> {
    let cmd = match c.archive_config {
        Some(p) => format!("pgvault-archive --config {} push %p", shell_word(&p.display().to_string())),
        None => "pgvault-archive push %p".to_string(),
    };
    Some((Typed::Text(cmd), "pgvault-archive stores each segment in the repository, checked".into()))
}

/// A path as one shell word (PostgreSQL runs archive_command with `sh -c`).
fn shell_word(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c)) {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$").replace('`', "\\`"))
    }
}

/// The least `archive_timeout` recommended: each forced switch archives a whole segment.
pub const ARCHIVE_TIMEOUT_FLOOR: Duration = Duration::from_secs(60);

fn archive_timeout(c: &Ctx) -> Option<(Typed, String)> {
    let rpo = c.inputs.rpo;
    let half = Duration::from_secs(rpo.as_secs() / 2);
    let (t, reason) = if half >= ARCHIVE_TIMEOUT_FLOOR {
        (
            half,
            format!(
                "half the RPO ({}): a quiet server's last writes are archived in time, with room for the upload",
                format_duration(rpo)
            ),
        )
    } else {
        (
            ARCHIVE_TIMEOUT_FLOOR,
            format!(
                "RPO {} is tighter than switching every 60s allows cheaply (a whole segment each); stream WAL for less",
                format_duration(rpo)
            ),
        )
    };
    Some((Typed::Millis(t.as_millis() as u64), reason))
}
