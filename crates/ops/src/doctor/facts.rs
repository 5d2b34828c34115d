//! What the audit knows about the server, the repository and the machine: plain data, filled
//! by [`super::gather`] from a live server and built by hand in unit tests, so that every rule
//! can be tested without PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::tune::Recommendation;

/// Everything the rules read.
#[derive(Clone, Debug)]
pub struct Facts {
    pub now: DateTime<Utc>,
    /// `server_version_num / 10000` (15, 16, ...).
    pub server_major: u32,
    /// `current_setting(name)` for every row of `pg_settings` (`128MB`, `on`, `'*'` unquoted).
    pub settings: BTreeMap<String, String>,
    pub archiver: Option<Archiver>,
    pub slots: Vec<Slot>,
    pub roles: Vec<Role>,
    pub passwords: PasswordAudit,
    pub hba: HbaFacts,
    pub repository: RepoFacts,
    pub resources: ResourceFacts,
    pub thresholds: Thresholds,
}

impl Facts {
    /// A setting's current value, `""` when the server does not have it.
    pub fn setting(&self, name: &str) -> &str {
        self.settings.get(name).map_or("", String::as_str)
    }

    /// A boolean setting is off (`off`, `false`, `0`, as PostgreSQL accepts them).
    pub fn is_off(&self, name: &str) -> bool {
        matches!(
            self.setting(name).trim().to_ascii_lowercase().as_str(),
            "off" | "false" | "0" | "no"
        )
    }
}

/// `pg_stat_archiver`, reduced to what the rules judge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archiver {
    pub failed_count: u64,
    /// The last failure is newer than the last success: archiving is failing now.
    pub failing_now: bool,
    pub last_failed_wal: Option<String>,
    pub last_archived_wal: Option<String>,
}

/// A row of `pg_replication_slots`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub kind: String,
    pub active: bool,
    /// WAL kept for the slot (current LSN minus `restart_lsn`), bytes.
    pub retained_bytes: Option<u64>,
    pub wal_status: Option<String>,
}

/// A role from `pg_roles`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub superuser: bool,
    pub can_login: bool,
}

/// Why a password is weak (never the password itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weakness {
    /// The password is the role name.
    EqualsName,
    /// The role name with a common suffix (`123`, `pass`, ...).
    NameVariant,
    /// One of the well-known defaults (`postgres`, `password`, `changeme`, ...).
    KnownDefault,
}

impl Weakness {
    pub fn describe(self) -> &'static str {
        match self {
            Weakness::EqualsName => "a password equal to its name",
            Weakness::NameVariant => "a password made of its name and a common suffix",
            Weakness::KnownDefault => "a well-known default password",
        }
    }
}

/// The result of checking the stored verifiers of `pg_authid` against a short list of guesses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordAudit {
    Checked {
        /// Roles that can log in with a guessable password.
        weak: Vec<(String, Weakness)>,
        /// Roles whose stored verifier is MD5 (weak hash, replayable by anyone who reads it).
        md5: Vec<String>,
    },
    /// `pg_authid` could not be read (not a superuser): why.
    Unreadable(String),
}

/// A `pg_hba.conf` rule, as `pg_hba_file_rules` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HbaRule {
    pub line: u32,
    /// `local`, `host`, `hostssl`, `hostnossl`, `hostgssenc`, `hostnogssenc`.
    pub kind: String,
    pub databases: Vec<String>,
    pub users: Vec<String>,
    /// `127.0.0.1`, `::`, `all`, `samehost`, a host name; `None` for `local`.
    pub address: Option<String>,
    /// Prefix length, from the CIDR suffix or the netmask.
    pub prefix: Option<u8>,
    pub method: String,
}

/// `pg_hba.conf`, or why it could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HbaFacts {
    Read { source: String, rules: Vec<HbaRule> },
    Unreadable(String),
}

/// The newest drill report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastDrill {
    pub id: String,
    pub at: DateTime<Utc>,
    pub passed: bool,
}

/// What the repository says about backups and drills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoFacts {
    Read {
        backups: usize,
        last_backup: Option<DateTime<Utc>>,
        last_drill: Option<LastDrill>,
        /// The drill reports could not be read: why.
        drill_error: Option<String>,
    },
    Unreadable(String),
}

/// `tune`'s advice for this machine, or why it was not asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceFacts {
    Advised {
        /// The machine the advice is for (`32GB, 4 CPUs, ssd, mixed`).
        machine: String,
        recommendations: Vec<Recommendation>,
    },
    NotChecked(String),
}

/// Ages above which backups and drills are too old.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub backup_max_age: Duration,
    pub drill_max_age: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            backup_max_age: Duration::from_secs(36 * 3600),
            drill_max_age: Duration::from_secs(30 * 86400),
        }
    }
}
