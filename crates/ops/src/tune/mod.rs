//! `pgvault tune`: recommended `postgresql.conf` settings from the machine, the storage, the
//! workload and the recovery-point objective (filled in by the tune work; this is the interface
//! `doctor` compares a running server against).

use std::time::Duration;

/// The kind of storage the data directory is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Ssd,
    Hdd,
    Network,
}

/// What the server mostly does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Web,
    Oltp,
    Dw,
    Mixed,
}

/// Everything a recommendation depends on.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// Memory available to PostgreSQL, bytes (cgroup limit first, then /proc/meminfo).
    pub memory_bytes: u64,
    pub cpus: u32,
    pub storage: Storage,
    pub workload: Workload,
    /// Expected client connections (`max_connections`).
    pub connections: u32,
    /// Connections arrive through a pooler (PgBouncer): fewer server connections.
    pub pooler: bool,
    /// Recovery-point objective (`[objectives] rpo`), drives `archive_timeout`.
    pub rpo: Duration,
    /// Server major version when known (17+ gets `summarize_wal`).
    pub server_major: Option<u32>,
}

/// One recommended setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// The `postgresql.conf` name.
    pub name: &'static str,
    /// The value as PostgreSQL writes it (`8GB`, `0.9`, `replica`, `'pgvault-archive push %p'`).
    pub value: String,
    /// One line: why this value.
    pub reason: String,
}

/// The recommended settings for `inputs` (stub: the tune work fills the rules in).
pub fn recommend(_inputs: &Inputs) -> Vec<Recommendation> {
    Vec::new()
}
