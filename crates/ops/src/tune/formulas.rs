//! The formulas and reasons behind the rules table ([`super::rules::RULES`]) that need more
//! than a line: connection fit, huge pages, work_mem's working, storage, archiving.

use std::time::Duration;

use pgvault_core::units::{format_duration, format_size};

use super::rules::Ctx;
use super::sizing::GB;
use super::sizing::{self, HUGE_PAGES_FROM, MB};
use super::{Storage, Typed, Workload};

pub(super) fn size(b: u64) -> String {
    format_size(b)
}

pub(super) fn mem(c: &Ctx) -> String {
    pgvault_core::units::format_size_rough(c.sizing.ram)
}

pub(super) fn max_connections(c: &Ctx) -> Option<(Typed, String)> {
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

pub(super) fn shared_buffers_reason(c: &Ctx) -> String {
    if c.sizing.shared_buffers < c.sizing.ram / 4 / MB * MB {
        format!("25% of {}, capped at 32GB: the OS cache serves the rest", mem(c))
    } else {
        format!(
            "25% of {}: PostgreSQL's own cache; the OS page cache holds the rest",
            mem(c)
        )
    }
}

pub(super) fn huge_pages(c: &Ctx) -> Option<(Typed, String)> {
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

pub(super) fn work_mem(c: &Ctx) -> Option<(Typed, String)> {
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

pub(super) fn maintenance_work_mem(c: &Ctx) -> Option<(Typed, String)> {
    let share = if c.inputs.workload == Workload::Dw {
        "1/8"
    } else {
        "1/16"
    };
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
pub(super) fn wal_sizes(w: Workload) -> (u64, u64) {
    match w {
        Workload::Web | Workload::Mixed => (GB, 4 * GB),
        Workload::Oltp => (2 * GB, 8 * GB),
        Workload::Dw => (4 * GB, 16 * GB),
    }
}

pub(super) fn random_page_cost(c: &Ctx) -> Option<(Typed, String)> {
    Some(match c.inputs.storage {
        Storage::Ssd => (
            Typed::Real(1100),
            "SSD: random reads cost about as much as sequential ones".into(),
        ),
        Storage::Network => (
            Typed::Real(1100),
            "network block storage (SAN, EBS, PD): random reads about as cheap as sequential".into(),
        ),
        Storage::Hdd => (
            Typed::Real(4000),
            "spinning disks: a random read costs a seek (the default)".into(),
        ),
    })
}

pub(super) fn effective_io_concurrency(c: &Ctx) -> Option<(Typed, String)> {
    Some(match c.inputs.storage {
        Storage::Ssd => (Typed::Integer(200), "SSDs serve many reads in parallel".into()),
        Storage::Network => (
            Typed::Integer(300),
            "network storage: deep queues hide the latency".into(),
        ),
        Storage::Hdd => (Typed::Integer(2), "spinning disks: few concurrent reads help".into()),
    })
}

pub(super) fn per_gather_reason(c: &Ctx) -> String {
    match c.sizing.workers_per_gather {
        0 => "one CPU: no parallel query".into(),
        n if c.inputs.workload == Workload::Dw => format!(
            "half the {} CPUs ({n}) per query: a warehouse scans big tables",
            c.inputs.cpus
        ),
        n => format!(
            "half the {} CPUs, at most 4 ({n}): parallel scans without starving other queries",
            c.inputs.cpus
        ),
    }
}

pub(super) fn archive_command(c: &Ctx) -> Option<(Typed, String)> {
    let cmd = match c.archive_config {
        Some(p) => format!(
            "pgvault-archive --config {} push %p",
            shell_word(&p.display().to_string())
        ),
        None => "pgvault-archive push %p".to_string(),
    };
    Some((
        Typed::Text(cmd),
        "pgvault-archive stores each segment in the repository, checked".into(),
    ))
}

/// A path as one shell word (PostgreSQL runs archive_command with `sh -c`).
pub(super) fn shell_word(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c)) {
        s.to_string()
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('`', "\\`")
        )
    }
}

/// The least `archive_timeout` recommended: each forced switch archives a whole segment.
pub const ARCHIVE_TIMEOUT_FLOOR: Duration = Duration::from_secs(60);

/// `archive_timeout` for an RPO: half of it, so that a forced segment switch plus its upload fit
/// in the objective, never below [`ARCHIVE_TIMEOUT_FLOOR`]. `tune` and `deploy` both use it.
pub fn archive_timeout_for(rpo: Duration) -> Duration {
    Duration::from_secs(rpo.as_secs() / 2).max(ARCHIVE_TIMEOUT_FLOOR)
}

pub(super) fn archive_timeout(c: &Ctx) -> Option<(Typed, String)> {
    let rpo = c.inputs.rpo;
    let t = archive_timeout_for(rpo);
    let reason = if rpo / 2 >= ARCHIVE_TIMEOUT_FLOOR {
        format!(
            "half the RPO ({}): a quiet server's last writes are archived in time, with room for the upload",
            format_duration(rpo)
        )
    } else {
        format!(
            "RPO {} is tighter than switching every 60s allows cheaply (a whole segment each); stream WAL for less",
            format_duration(rpo)
        )
    };
    Some((Typed::Millis(t.as_millis() as u64), reason))
}
