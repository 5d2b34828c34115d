//! The repository descriptor (`pgvault.repo`): the one plaintext object in a repository.
//!
//! It says which format the repository is in, which cluster it belongs to, and holds the
//! repository key wrapped by the passphrase. Every command reads it first, so a repository of
//! another cluster, or of a newer format, is refused before anything else is touched.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::format::Keyring;

/// The newest repository format version this build reads and writes: new repositories are
/// created in it. A repository's `format_version` says which object version it writes: 1
/// (objects not identity-bound) until `upgrade`, 2 after.
pub const FORMAT_VERSION: u32 = 2;
/// Format versions this build reads.
pub const READABLE_VERSIONS: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;
/// Bounds on `cluster.wal_segment_size` (PostgreSQL allows powers of two from 1 MiB to 1 GiB).
pub const MIN_WAL_SEGMENT_SIZE: u64 = 1 << 20;
pub const MAX_WAL_SEGMENT_SIZE: u64 = 1 << 30;
pub const FORMAT_NAME: &str = "pgvault-repository";

/// The cluster a repository belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// `pg_control`'s system identifier, as a decimal string (JSON numbers lose precision).
    #[serde(with = "u64_string")]
    pub system_identifier: u64,
    /// `server_version_num` at `init`, e.g. 150004.
    pub pg_version_num: u32,
    pub wal_segment_size: u64,
}

impl ClusterIdentity {
    /// Checks the fields that size allocations and arithmetic later (the descriptor is not
    /// authenticated, so they are bounded before use).
    pub fn check_bounds(&self) -> Result<(), String> {
        let s = self.wal_segment_size;
        if !s.is_power_of_two() || !(MIN_WAL_SEGMENT_SIZE..=MAX_WAL_SEGMENT_SIZE).contains(&s) {
            return Err(format!(
                "WAL segment size {s} is not a power of two between 1 MiB and 1 GiB"
            ));
        }
        Ok(())
    }

    pub fn major(&self) -> u32 {
        self.pg_version_num / 10000
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoMeta {
    pub format: String,
    pub format_version: u32,
    pub repository_id: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub cluster: ClusterIdentity,
    /// Absent for an unencrypted repository.
    pub encryption: Option<Keyring>,
    /// Whether `init` found that the store honours conditional create (`If-None-Match: *`);
    /// absent in repositories made before the probe existed (local ones always do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditional_create: Option<bool>,
}

pub(crate) mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
