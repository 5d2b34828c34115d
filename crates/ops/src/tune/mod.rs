//! `pgvault tune`: recommended `postgresql.conf` settings from the machine, the storage, the
//! workload and the recovery-point objective.
//!
//! The people who run pgvault keep finding the same gaps in their own reviews: memory left at
//! the defaults (`shared_buffers = 128MB`), no archiving. This module turns a machine's size and
//! use into settings, each with a one-line reason and the reference it follows (pgtune's
//! formulas, PostgreSQL's documentation), so that an operator can check every number.
//!
//! The rules are data ([`rules::RULES`]): a setting, a formula over [`Inputs`] (and the values
//! already decided, e.g. `work_mem` depends on `shared_buffers`), a reason and a reference.
//! `doctor` compares a running server against [`recommend`] with [`Recommendation::matches`].

mod formulas;
pub mod machine;
pub mod render;
pub mod rules;
pub mod sizing;
mod value;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_setups;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use formulas::archive_timeout_for;
pub use value::Typed;

/// Why an input could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TuneError {
    #[error("unknown storage '{0}': give ssd, hdd or network")]
    BadStorage(String),
    #[error("unknown workload '{0}': give web, oltp, dw or mixed")]
    BadWorkload(String),
    #[error("unknown format '{0}': give conf, sql or json")]
    BadFormat(String),
    #[error("{what} must be at least {min} (got {got})")]
    TooSmall {
        what: &'static str,
        min: String,
        got: String,
    },
}

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

impl Storage {
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Ssd => "ssd",
            Storage::Hdd => "hdd",
            Storage::Network => "network",
        }
    }
}

impl Workload {
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Web => "web",
            Workload::Oltp => "oltp",
            Workload::Dw => "dw",
            Workload::Mixed => "mixed",
        }
    }
}

impl FromStr for Storage {
    type Err = TuneError;
    fn from_str(s: &str) -> Result<Storage, TuneError> {
        match s.to_ascii_lowercase().as_str() {
            "ssd" | "nvme" => Ok(Storage::Ssd),
            "hdd" => Ok(Storage::Hdd),
            "network" | "san" => Ok(Storage::Network),
            _ => Err(TuneError::BadStorage(s.to_string())),
        }
    }
}

impl FromStr for Workload {
    type Err = TuneError;
    fn from_str(s: &str) -> Result<Workload, TuneError> {
        match s.to_ascii_lowercase().as_str() {
            "web" => Ok(Workload::Web),
            "oltp" => Ok(Workload::Oltp),
            "dw" => Ok(Workload::Dw),
            "mixed" => Ok(Workload::Mixed),
            _ => Err(TuneError::BadWorkload(s.to_string())),
        }
    }
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

/// The least memory `tune` works from: below it PostgreSQL's defaults are the advice.
pub const MIN_MEMORY: u64 = 256 << 20;

impl Inputs {
    /// Refuses inputs no formula can be sound for (less than [`MIN_MEMORY`], no CPU, no connection).
    pub fn validate(&self) -> Result<(), TuneError> {
        if self.memory_bytes < MIN_MEMORY {
            return Err(TuneError::TooSmall {
                what: "memory",
                min: pgvault_core::units::format_size(MIN_MEMORY),
                got: pgvault_core::units::format_size(self.memory_bytes),
            });
        }
        if self.cpus == 0 {
            return Err(TuneError::TooSmall {
                what: "cpus",
                min: "1".into(),
                got: "0".into(),
            });
        }
        if self.connections == 0 {
            return Err(TuneError::TooSmall {
                what: "connections",
                min: "1".into(),
                got: "0".into(),
            });
        }
        Ok(())
    }
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
    /// The formula or documentation the value follows (pgtune, a PostgreSQL docs section).
    pub reference: &'static str,
    /// The value typed, for comparison with `pg_settings` (bytes, milliseconds, number, text).
    pub typed: Typed,
    /// Changing it needs a server restart (`pg_settings.context = 'postmaster'`).
    pub restart: bool,
    /// The value is a floor: a larger current value also complies (`max_wal_senders = 10` is
    /// met by 20).
    pub at_least: bool,
}

impl Recommendation {
    /// The value without the quotes a string setting is written with (`pgvault-archive push %p`).
    pub fn unquoted(&self) -> String {
        value::unquote(&self.value)
    }

    /// Whether a server's `pg_settings` row (`setting`, `unit`) already has this value: sizes and
    /// durations compared in bytes and milliseconds, numbers numerically, booleans by meaning.
    pub fn matches(&self, setting: &str, unit: Option<&str>) -> bool {
        match (&self.typed, self.at_least) {
            (Typed::Integer(floor), true) => setting.trim().parse::<i64>().is_ok_and(|v| v >= *floor),
            _ => self.typed.matches(setting, unit),
        }
    }
}

/// The recommended settings for `inputs`, with `archive_command` calling `pgvault-archive` with
/// its default configuration ($PGVAULT_CONFIG, then /etc/pgvault/pgvault.toml).
///
/// Inputs below [`MIN_MEMORY`] or with zero CPUs/connections are clamped up to them; call
/// [`Inputs::validate`] first to refuse them instead.
pub fn recommend(inputs: &Inputs) -> Vec<Recommendation> {
    recommend_with_config(inputs, None)
}

/// As [`recommend`], with `archive_command = 'pgvault-archive --config CONFIG push %p'` when a
/// configuration file is named.
pub fn recommend_with_config(inputs: &Inputs, archive_config: Option<&Path>) -> Vec<Recommendation> {
    let clamped = Inputs {
        memory_bytes: inputs.memory_bytes.max(MIN_MEMORY),
        cpus: inputs.cpus.max(1),
        connections: inputs.connections.max(1),
        ..inputs.clone()
    };
    rules::evaluate(&clamped, archive_config)
}
