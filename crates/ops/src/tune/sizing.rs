//! The numbers the memory, connection and parallelism rules share, each computed once by a small
//! formula (pgtune's, unless the comment says why not), so that the rules table only words them.

use super::{Inputs, Workload};

pub const KB: u64 = 1 << 10;
pub const MB: u64 = 1 << 20;
pub const GB: u64 = 1 << 30;

/// `shared_buffers` stops growing here: beyond it the OS cache does the job as well, and
/// checkpoints and buffer scans get slower (the cap the reviewed Compose auto-config uses too).
pub const SHARED_BUFFERS_CAP: u64 = 32 * GB;
/// pgtune's and PostgreSQL's practical ceiling for `maintenance_work_mem`.
pub const MAINTENANCE_CAP: u64 = 2 * GB;
/// PostgreSQL's smallest `work_mem`, pgtune's floor.
pub const WORK_MEM_FLOOR: u64 = 64 * KB;
/// `work_mem` is assumed used this many times per connection at once (sorts, hashes: pgtune's ×3).
pub const WORK_MEM_USES: u64 = 3;
/// One WAL segment: `wal_buffers` beyond it gains nothing (PostgreSQL's own auto-tuning cap).
pub const WAL_BUFFERS_CAP: u64 = 16 * MB;
/// From this much RAM on, huge pages pay (pgtune: `huge_pages = try` from 32GB).
pub const HUGE_PAGES_FROM: u64 = 32 * GB;

/// The shared quantities, in bytes and counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizing {
    pub ram: u64,
    pub shared_buffers: u64,
    pub effective_cache_size: u64,
    pub maintenance_work_mem: u64,
    pub work_mem: u64,
    /// Server connections (`max_connections`), after the pooler and the memory fit.
    pub connections: u32,
    /// Set when the stated (or pooled) connection count did not fit in memory: that count.
    pub connections_cut_from: Option<u32>,
    pub workers_per_gather: u32,
    pub max_parallel_workers: u32,
    pub max_worker_processes: u32,
    pub maintenance_workers: u32,
    pub wal_buffers: u64,
}

impl Sizing {
    /// The work_mem divisor pgtune uses for parallel plans: each gather node's workers can each
    /// use `work_mem` (at least 1).
    pub fn parallel_factor(&self) -> u64 {
        u64::from(self.workers_per_gather.max(1))
    }

    /// The memory the connections may use for sorts and hashes: RAM − shared_buffers −
    /// wal_buffers − maintenance_work_mem (pgtune subtracts only shared_buffers; the WAL buffers
    /// and one maintenance operation are kept out too, so that the sum stays within RAM).
    pub fn work_mem_budget(&self) -> u64 {
        self.ram - self.shared_buffers - self.wal_buffers - self.maintenance_work_mem
    }
}

/// Rounds down to a tidy unit: 1MB from 16MB up, else 8kB (PostgreSQL's page size).
pub fn tidy(bytes: u64) -> u64 {
    let step = if bytes >= 16 * MB { MB } else { 8 * KB };
    bytes / step * step
}

/// Server connections before the memory fit: behind a pooler, about four per core (the
/// PostgreSQL wiki's (cores × 2) + spindles, doubled for I/O waits), at least 20, never more than
/// the clients stated; direct, the clients stated.
pub fn pooled_connections(inputs: &Inputs) -> u32 {
    if inputs.pooler {
        inputs.connections.min((inputs.cpus.saturating_mul(4)).max(20))
    } else {
        inputs.connections
    }
}

pub fn compute(inputs: &Inputs) -> Sizing {
    let ram = inputs.memory_bytes;
    let shared_buffers = tidy((ram / 4).min(SHARED_BUFFERS_CAP));
    let effective_cache_size = tidy(ram / 4 * 3);
    let maintenance_div = if inputs.workload == Workload::Dw { 8 } else { 16 };
    let maintenance_work_mem = tidy((ram / maintenance_div).min(MAINTENANCE_CAP));
    let cpus = inputs.cpus.max(1);
    // pgtune: ceil(cpus / 2) per gather, at most 4 except for a warehouse; none on one CPU.
    let mut workers_per_gather = if cpus < 2 { 0 } else { cpus.div_ceil(2) };
    if inputs.workload != Workload::Dw {
        workers_per_gather = workers_per_gather.min(4);
    }
    let maintenance_workers = if cpus < 2 { 0 } else { cpus.div_ceil(2).min(4) };
    let mut s = Sizing {
        ram,
        shared_buffers,
        effective_cache_size,
        maintenance_work_mem,
        work_mem: 0,
        connections: pooled_connections(inputs).max(1),
        connections_cut_from: None,
        workers_per_gather,
        max_parallel_workers: cpus,
        // pgtune gives `cpus`; at least PostgreSQL's default 8 keeps room for the background
        // workers of logical replication and extensions, which are not parallel query.
        max_worker_processes: cpus.max(8),
        maintenance_workers,
        wal_buffers: wal_buffers(shared_buffers),
    };
    fit_work_mem(&mut s, inputs.workload);
    s
}

/// pgtune: (RAM − shared_buffers) / (connections × 3) / parallel factor, halved for mixed and
/// warehouse loads (bigger sorts, fewer at once is not guaranteed), at least 64kB. When even 64kB
/// does not fit, the connection count is cut to what does.
fn fit_work_mem(s: &mut Sizing, workload: Workload) {
    let budget = s.work_mem_budget();
    let per_conn = WORK_MEM_USES * s.parallel_factor();
    let raw = budget / (u64::from(s.connections) * per_conn);
    let shaped = match workload {
        Workload::Web | Workload::Oltp => raw,
        Workload::Dw | Workload::Mixed => raw / 2,
    };
    if shaped >= WORK_MEM_FLOOR {
        s.work_mem = shaped / KB * KB;
        return;
    }
    s.work_mem = WORK_MEM_FLOOR;
    let fits = budget / (per_conn * WORK_MEM_FLOOR);
    if u64::from(s.connections) > fits {
        s.connections_cut_from = Some(s.connections);
        s.connections = u32::try_from(fits).unwrap_or(u32::MAX).max(1);
    }
}

/// pgtune (and PostgreSQL's `-1` auto-tuning): 3% of shared_buffers, at most one 16MB segment,
/// rounded up to 16MB from 14MB, at least 32kB.
pub fn wal_buffers(shared_buffers: u64) -> u64 {
    let v = shared_buffers * 3 / 100;
    let v = if v > 14 * MB { WAL_BUFFERS_CAP } else { v };
    (v / (8 * KB) * (8 * KB)).max(32 * KB)
}
