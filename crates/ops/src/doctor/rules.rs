//! The rule table of `pgvault doctor`: each rule is data (id, area, severity, what it reads,
//! the fix, a reference) plus one small pure function from [`Facts`] to the hits it finds. To add
//! a check, add a row; docs/DOCTOR.md lists every row.

use super::facts::{Facts, HbaFacts, PasswordAudit, RepoFacts, ResourceFacts};
use super::rules_checks::{
    archive_not_pgvault, hba_hits, inactive_slots, off_hit, older_than, setting_is, superuser_remote,
};
use super::{hba, Area, Severity};

/// One thing a rule found: the evidence, and a fix more precise than the rule's own when the
/// facts give one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hit {
    pub evidence: String,
    pub fix: Option<String>,
    pub sql: Option<String>,
}

impl Hit {
    pub(super) fn new(evidence: impl Into<String>) -> Hit {
        Hit {
            evidence: evidence.into(),
            ..Hit::default()
        }
    }

    pub(super) fn sql(mut self, sql: impl Into<String>) -> Hit {
        self.sql = Some(sql.into());
        self
    }
}

/// A check: what it is, what it reads, how bad it is, how to fix it, and the check itself.
pub struct Rule {
    pub id: &'static str,
    pub area: Area,
    pub severity: Severity,
    pub title: &'static str,
    /// Where the facts come from (for docs/DOCTOR.md and `--json` readers).
    pub reads: &'static str,
    pub fix: &'static str,
    pub reference: &'static str,
    pub check: fn(&Facts) -> Vec<Hit>,
}

const DOC_WAL: &str = "https://www.postgresql.org/docs/current/continuous-archiving.html";
const DOC_HBA: &str = "https://www.postgresql.org/docs/current/auth-pg-hba-conf.html";
const DOC_AUTH: &str = "https://www.postgresql.org/docs/current/auth-password.html";
const DOC_CONN: &str = "https://www.postgresql.org/docs/current/runtime-config-connection.html";
const DOC_SSL: &str = "https://www.postgresql.org/docs/current/ssl-tcp.html";
const DOC_WALCONF: &str = "https://www.postgresql.org/docs/current/runtime-config-wal.html";
const DOC_CHECKSUMS: &str = "https://www.postgresql.org/docs/current/checksums.html";
const DOC_SLOTS: &str = "https://www.postgresql.org/docs/current/warm-standby.html#STREAMING-REPLICATION-SLOTS";
const DOC_PGVAULT: &str = "docs/DOCTOR.md";

/// Every check, in the order findings of one severity are reported.
pub static RULES: &[Rule] = &[
    // ---------------------------------------------------------------- backup set-up
    Rule {
        id: "backup.wal_level_minimal",
        area: Area::Backup,
        severity: Severity::Critical,
        title: "wal_level is minimal: WAL cannot be archived or streamed",
        reads: "pg_settings wal_level",
        fix: "ALTER SYSTEM SET wal_level = 'replica'; then restart PostgreSQL",
        reference: DOC_WALCONF,
        check: |f| setting_is(f, "wal_level", "minimal", "ALTER SYSTEM SET wal_level = 'replica'"),
    },
    Rule {
        id: "backup.summarize_wal_off",
        area: Area::Backup,
        severity: Severity::Info,
        title: "summarize_wal is off: incremental backups (`pgvault backup --type incr|diff`) fall back to full ones",
        reads: "pg_settings summarize_wal (PostgreSQL 17+)",
        fix: "ALTER SYSTEM SET summarize_wal = on; then SELECT pg_reload_conf() (see docs/INCREMENTAL.md)",
        reference: "docs/INCREMENTAL.md",
        check: |f| {
            if f.server_major >= 17 && f.is_off("summarize_wal") {
                vec![Hit::new("summarize_wal = off").sql("ALTER SYSTEM SET summarize_wal = on")]
            } else {
                vec![]
            }
        },
    },
    Rule {
        id: "backup.archive_mode_off",
        area: Area::Backup,
        severity: Severity::Critical,
        title: "WAL archiving is off: no point-in-time recovery, backups cannot be restored to now",
        reads: "pg_settings archive_mode",
        fix: "ALTER SYSTEM SET archive_mode = 'on' and archive_command = 'pgvault-archive push %p' (see `pgvault tune`); then restart PostgreSQL",
        reference: DOC_WAL,
        check: |f| {
            if f.is_off("archive_mode") {
                vec![Hit::new("archive_mode = off").sql("ALTER SYSTEM SET archive_mode = 'on'")]
            } else {
                vec![]
            }
        },
    },
    Rule {
        id: "backup.archive_command_empty",
        area: Area::Backup,
        severity: Severity::Critical,
        title: "archive_mode is on but nothing archives: WAL piles up in pg_wal until the disk is full",
        reads: "pg_settings archive_mode, archive_command, archive_library",
        fix: "ALTER SYSTEM SET archive_command = 'pgvault-archive push %p'; then SELECT pg_reload_conf()",
        reference: DOC_WAL,
        check: |f| {
            let archiving = !f.is_off("archive_mode") && !f.setting("archive_mode").is_empty();
            if archiving && f.setting("archive_command").trim().is_empty() && f.setting("archive_library").is_empty() {
                vec![Hit::new("archive_mode = on, archive_command = '' and no archive_library")]
            } else {
                vec![]
            }
        },
    },
    Rule {
        id: "backup.archive_command_not_pgvault",
        area: Area::Backup,
        severity: Severity::Warning,
        title: "WAL is not archived by pgvault: the repository cannot restore to a point in time",
        reads: "pg_settings archive_command, archive_library",
        fix: "ALTER SYSTEM SET archive_command = 'pgvault-archive push %p'; then SELECT pg_reload_conf()",
        reference: DOC_PGVAULT,
        check: archive_not_pgvault,
    },
    Rule {
        id: "backup.archiver_failing",
        area: Area::Backup,
        severity: Severity::Critical,
        title: "WAL archiving is failing now: WAL piles up and the recovery point falls behind",
        reads: "pg_stat_archiver",
        fix: "read the server log for the archive_command's error; `pgvault check` tests the whole path",
        reference: DOC_WAL,
        check: |f| match &f.archiver {
            Some(a) if a.failing_now => vec![Hit::new(format!(
                "pg_stat_archiver: {} failure(s), the last one (WAL {}) after the last success ({})",
                a.failed_count,
                a.last_failed_wal.as_deref().unwrap_or("?"),
                a.last_archived_wal.as_deref().unwrap_or("never")
            ))],
            _ => vec![],
        },
    },
    Rule {
        id: "backup.archiver_failed_before",
        area: Area::Backup,
        severity: Severity::Info,
        title: "WAL archiving failed in the past and has recovered",
        reads: "pg_stat_archiver",
        fix: "nothing to do now; if it repeats, read the server log around the failures",
        reference: DOC_WAL,
        check: |f| match &f.archiver {
            Some(a) if !a.failing_now && a.failed_count > 0 => vec![Hit::new(format!(
                "pg_stat_archiver: {} failure(s) since the statistics were reset, the newest archived WAL is {}",
                a.failed_count,
                a.last_archived_wal.as_deref().unwrap_or("?")
            ))],
            _ => vec![],
        },
    },
    Rule {
        id: "backup.repository_unreadable",
        area: Area::Backup,
        severity: Severity::Warning,
        title: "the repository could not be read: backups were not checked",
        reads: "the [repository] of the configuration",
        fix: "run `pgvault info` to see why; `pgvault init` creates a new repository",
        reference: DOC_PGVAULT,
        check: |f| match &f.repository {
            RepoFacts::Unreadable(why) => vec![Hit::new(why.clone())],
            RepoFacts::Read { .. } => vec![],
        },
    },
    Rule {
        id: "backup.no_backup",
        area: Area::Backup,
        severity: Severity::Critical,
        title: "there is no backup",
        reads: "the repository's backups",
        fix: "run `pgvault backup` now, and schedule it (daily or more often)",
        reference: DOC_PGVAULT,
        check: |f| match &f.repository {
            RepoFacts::Read { backups: 0, .. } => vec![Hit::new("the repository holds no complete backup")],
            _ => vec![],
        },
    },
    Rule {
        id: "backup.last_backup_old",
        area: Area::Backup,
        severity: Severity::Warning,
        title: "the last backup is old: restores replay a long stretch of WAL",
        reads: "the repository's newest backup",
        fix: "run `pgvault backup`, and check the schedule that should have run it",
        reference: DOC_PGVAULT,
        check: |f| match &f.repository {
            RepoFacts::Read {
                last_backup: Some(at), ..
            } => older_than(f, *at, f.thresholds.backup_max_age, "the newest backup finished")
                .into_iter()
                .collect(),
            _ => vec![],
        },
    },
    Rule {
        id: "backup.no_drill",
        area: Area::Backup,
        severity: Severity::Warning,
        title: "no backup was ever test-restored",
        reads: "the repository's drill reports",
        fix: "run `pgvault drill` (it restores into a sandbox, starts it and checks it), and schedule it",
        reference: "docs/DRILLS.md",
        check: |f| match &f.repository {
            RepoFacts::Read {
                last_drill: None,
                drill_error: None,
                ..
            } => vec![Hit::new("the repository holds no drill report")],
            _ => vec![],
        },
    },
    Rule {
        id: "backup.drill_failed",
        area: Area::Backup,
        severity: Severity::Warning,
        title: "the last restore drill failed",
        reads: "the repository's newest drill report",
        fix: "read the report (`pgvault list` shows why) and fix the cause; then run `pgvault drill` again",
        reference: "docs/DRILLS.md",
        check: |f| match &f.repository {
            RepoFacts::Read {
                last_drill: Some(d), ..
            } if !d.passed => vec![Hit::new(format!("drill {} at {} did not pass", d.id, d.at.format("%F %T UTC")))],
            _ => vec![],
        },
    },
    Rule {
        id: "backup.last_drill_old",
        area: Area::Backup,
        severity: Severity::Warning,
        title: "the last restore drill is old",
        reads: "the repository's newest drill report",
        fix: "run `pgvault drill`, and schedule it (monthly at least)",
        reference: "docs/DRILLS.md",
        check: |f| match &f.repository {
            RepoFacts::Read {
                last_drill: Some(d), ..
            } => older_than(f, d.at, f.thresholds.drill_max_age, "the newest drill ran")
                .into_iter()
                .collect(),
            _ => vec![],
        },
    },
    Rule {
        id: "backup.drill_unreadable",
        area: Area::Backup,
        severity: Severity::Info,
        title: "the drill reports could not be read",
        reads: "the repository's drill reports",
        fix: "run `pgvault list` to see the error",
        reference: "docs/DRILLS.md",
        check: |f| match &f.repository {
            RepoFacts::Read {
                drill_error: Some(e), ..
            } => vec![Hit::new(e.clone())],
            _ => vec![],
        },
    },
    Rule {
        id: "backup.inactive_slot",
        area: Area::Backup,
        severity: Severity::Warning,
        title: "an inactive replication slot holds WAL: pg_wal grows until the disk is full",
        reads: "pg_replication_slots",
        fix: "drop the slot if nothing uses it any more: SELECT pg_drop_replication_slot('name'); or set max_slot_wal_keep_size",
        reference: DOC_SLOTS,
        check: inactive_slots,
    },
    // ---------------------------------------------------------------- security
    Rule {
        id: "security.hba_trust",
        area: Area::Security,
        severity: Severity::Critical,
        title: "pg_hba.conf trusts network connections: anyone who reaches the port is in, as any role",
        reads: "pg_hba_file_rules (or pg_hba.conf)",
        fix: "replace `trust` with `scram-sha-256` on host lines and limit the address to the clients' network; then SELECT pg_reload_conf()",
        reference: DOC_HBA,
        check: |f| hba_hits(f, |r| r.method == "trust" && hba::is_remote(r)),
    },
    Rule {
        id: "security.hba_trust_local",
        area: Area::Security,
        severity: Severity::Warning,
        title: "pg_hba.conf trusts local connections: every local OS user can connect as any role",
        reads: "pg_hba_file_rules (or pg_hba.conf)",
        fix: "use `peer` for local socket lines and `scram-sha-256` for loopback host lines",
        reference: DOC_HBA,
        check: |f| hba_hits(f, |r| r.method == "trust" && !hba::is_remote(r)),
    },
    Rule {
        id: "security.hba_password",
        area: Area::Security,
        severity: Severity::Warning,
        title: "pg_hba.conf accepts cleartext passwords (`password` method)",
        reads: "pg_hba_file_rules (or pg_hba.conf)",
        fix: "use `scram-sha-256` instead of `password`",
        reference: DOC_AUTH,
        check: |f| hba_hits(f, |r| r.method == "password"),
    },
    Rule {
        id: "security.hba_md5",
        area: Area::Security,
        severity: Severity::Warning,
        title: "pg_hba.conf uses md5 authentication",
        reads: "pg_hba_file_rules (or pg_hba.conf)",
        fix: "re-set the roles' passwords with password_encryption = 'scram-sha-256', then replace `md5` with `scram-sha-256`",
        reference: DOC_AUTH,
        check: |f| hba_hits(f, |r| r.method == "md5"),
    },
    Rule {
        id: "security.hba_broad_range",
        area: Area::Security,
        severity: Severity::Warning,
        title: "pg_hba.conf admits a very wide address range",
        reads: "pg_hba_file_rules (or pg_hba.conf)",
        fix: "limit the address to the clients' subnet (e.g. 10.0.1.0/24 instead of 0.0.0.0/0 or 10.0.0.0/8)",
        reference: DOC_HBA,
        check: |f| hba_hits(f, |r| r.method != "reject" && hba::is_broad(r)),
    },
    Rule {
        id: "security.superuser_remote",
        area: Area::Security,
        severity: Severity::Warning,
        title: "superusers can log in over the network",
        reads: "pg_hba_file_rules, pg_roles (rolsuper, rolcanlogin), listen_addresses",
        fix: "add `host all postgres 0.0.0.0/0 reject` (and ::/0) before the other host lines, and administer over the local socket",
        reference: DOC_HBA,
        check: superuser_remote,
    },
    Rule {
        id: "security.listen_all",
        area: Area::Security,
        severity: Severity::Warning,
        title: "PostgreSQL listens on every network interface",
        reads: "pg_settings listen_addresses",
        fix: "ALTER SYSTEM SET listen_addresses = 'localhost' (or the one interface clients use); then restart PostgreSQL",
        reference: DOC_CONN,
        check: |f| {
            let v = f.setting("listen_addresses");
            let all = v.split(',').map(str::trim).any(|a| matches!(a, "*" | "0.0.0.0" | "::"));
            if all {
                vec![Hit::new(format!("listen_addresses = '{v}'")).sql("ALTER SYSTEM SET listen_addresses = 'localhost'")]
            } else {
                vec![]
            }
        },
    },
    Rule {
        id: "security.password_encryption",
        area: Area::Security,
        severity: Severity::Warning,
        title: "new passwords are stored as MD5",
        reads: "pg_settings password_encryption",
        fix: "ALTER SYSTEM SET password_encryption = 'scram-sha-256'; then set the passwords again",
        reference: DOC_AUTH,
        check: |f| {
            let v = f.setting("password_encryption");
            if !v.is_empty() && v != "scram-sha-256" {
                vec![Hit::new(format!("password_encryption = '{v}'"))
                    .sql("ALTER SYSTEM SET password_encryption = 'scram-sha-256'")]
            } else {
                vec![]
            }
        },
    },
    Rule {
        id: "security.ssl_off",
        area: Area::Security,
        severity: Severity::Warning,
        title: "TLS is off: passwords and data cross the network in clear",
        reads: "pg_settings ssl",
        fix: "set ssl = on with ssl_cert_file and ssl_key_file (`pgvault deploy` can generate a first pair), then `hostssl` lines in pg_hba.conf",
        reference: DOC_SSL,
        check: |f| {
            if f.is_off("ssl") {
                vec![Hit::new("ssl = off")]
            } else {
                vec![]
            }
        },
    },
    Rule {
        id: "security.weak_password",
        area: Area::Security,
        severity: Severity::Critical,
        title: "a role that can log in has a guessable password",
        reads: "pg_authid rolpassword (verifiers recomputed for the role name and known defaults, no brute force)",
        fix: "ALTER ROLE name PASSWORD '<32+ random characters>' (from a secret store; `openssl rand -base64 32`)",
        reference: DOC_AUTH,
        check: |f| match &f.passwords {
            PasswordAudit::Checked { weak, .. } => weak
                .iter()
                .map(|(role, why)| Hit::new(format!("role {role} has {}", why.describe())))
                .collect(),
            PasswordAudit::Unreadable(_) => vec![],
        },
    },
    Rule {
        id: "security.md5_verifier",
        area: Area::Security,
        severity: Severity::Warning,
        title: "passwords stored as MD5 verifiers",
        reads: "pg_authid rolpassword",
        fix: "with password_encryption = 'scram-sha-256', set these roles' passwords again",
        reference: DOC_AUTH,
        check: |f| match &f.passwords {
            PasswordAudit::Checked { md5, .. } if !md5.is_empty() => {
                vec![Hit::new(format!("role(s) with an MD5 verifier: {}", md5.join(", ")))]
            }
            _ => vec![],
        },
    },
    Rule {
        id: "security.password_check_skipped",
        area: Area::Security,
        severity: Severity::Info,
        title: "passwords were not checked",
        reads: "pg_authid",
        fix: "run doctor as a superuser to check for default and name-equal passwords",
        reference: DOC_PGVAULT,
        check: |f| match &f.passwords {
            PasswordAudit::Unreadable(why) => vec![Hit::new(why.clone())],
            PasswordAudit::Checked { .. } => vec![],
        },
    },
    Rule {
        id: "security.hba_unreadable",
        area: Area::Security,
        severity: Severity::Info,
        title: "pg_hba.conf was not checked",
        reads: "pg_hba_file_rules, pg_hba.conf",
        fix: "run doctor as a superuser, or where the data directory is readable",
        reference: DOC_PGVAULT,
        check: |f| match &f.hba {
            HbaFacts::Unreadable(why) => vec![Hit::new(why.clone())],
            HbaFacts::Read { .. } => vec![],
        },
    },
    // ---------------------------------------------------------------- reliability
    Rule {
        id: "reliability.fsync_off",
        area: Area::Reliability,
        severity: Severity::Critical,
        title: "fsync is off: a crash or power loss can corrupt the cluster",
        reads: "pg_settings fsync",
        fix: "ALTER SYSTEM SET fsync = on; then SELECT pg_reload_conf()",
        reference: DOC_WALCONF,
        check: |f| off_hit(f, "fsync", "ALTER SYSTEM SET fsync = on"),
    },
    Rule {
        id: "reliability.full_page_writes_off",
        area: Area::Reliability,
        severity: Severity::Critical,
        title: "full_page_writes is off: torn pages after a crash, unsafe base backups",
        reads: "pg_settings full_page_writes",
        fix: "ALTER SYSTEM SET full_page_writes = on; then SELECT pg_reload_conf()",
        reference: DOC_WALCONF,
        check: |f| off_hit(f, "full_page_writes", "ALTER SYSTEM SET full_page_writes = on"),
    },
    Rule {
        id: "reliability.data_checksums_off",
        area: Area::Reliability,
        severity: Severity::Warning,
        title: "data checksums are off: silent corruption goes unnoticed (and into backups)",
        reads: "SHOW data_checksums",
        fix: "stop the server and run `pg_checksums --enable -D <data directory>` (offline; time grows with size)",
        reference: DOC_CHECKSUMS,
        check: |f| {
            if f.is_off("data_checksums") {
                vec![Hit::new("data_checksums = off")]
            } else {
                vec![]
            }
        },
    },
    Rule {
        id: "reliability.synchronous_commit_off",
        area: Area::Reliability,
        severity: Severity::Warning,
        title: "synchronous_commit is off: a crash loses the last acknowledged transactions",
        reads: "pg_settings synchronous_commit",
        fix: "ALTER SYSTEM SET synchronous_commit = on (or set it off only for the sessions that can lose data)",
        reference: DOC_WALCONF,
        check: |f| off_hit(f, "synchronous_commit", "ALTER SYSTEM SET synchronous_commit = on"),
    },
    // ---------------------------------------------------------------- resources
    Rule {
        id: "resources.far_from_advice",
        area: Area::Resources,
        severity: Severity::Warning,
        title: "a memory or WAL setting is far from `pgvault tune`'s advice for this machine",
        reads: "pg_settings, the machine's memory and CPUs, pgvault tune",
        fix: "see `pgvault tune` for every recommended setting and its reason",
        reference: "docs/TUNE.md",
        check: super::rules_resources::far_from_advice,
    },
    Rule {
        id: "resources.not_checked",
        area: Area::Resources,
        severity: Severity::Info,
        title: "settings were not compared with `pgvault tune`'s advice",
        reads: "the machine's memory and CPUs",
        fix: "run doctor on the database host, or give --memory and --cpus",
        reference: "docs/TUNE.md",
        check: |f| match &f.resources {
            ResourceFacts::NotChecked(why) => vec![Hit::new(why.clone())],
            ResourceFacts::Advised { .. } => vec![],
        },
    },
];
