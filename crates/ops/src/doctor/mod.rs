//! `pgvault doctor`: a production-readiness audit of a running PostgreSQL server and of its
//! pgvault repository, the gaps the reviews of real set-ups keep finding (no archiving, no tested
//! backups, `trust` lines, open listen addresses, weak passwords, no TLS, checksums off, memory
//! left at its defaults).
//!
//! The audit has two phases so that the judgement is testable without a server:
//! - [`gather`] reads facts from the server (`pg_settings`, `pg_stat_archiver`,
//!   `pg_replication_slots`, `pg_roles`/`pg_authid`, `pg_hba_file_rules` or the local
//!   `pg_hba.conf`), from the repository (last backup, last drill) and from the machine (for
//!   `tune`'s advice) into a [`Facts`] value;
//! - [`judge`] applies the rule table ([`rules::RULES`]: each rule an id, a severity, what it
//!   reads, the fix and a reference) to the facts, purely.
//!
//! Findings never carry secrets: a weak password is reported as "equal to the role name" or "a
//! well-known default", never spelled.

pub mod facts;
pub mod gather;
pub mod hba;
pub mod passwords;
pub mod rules;
mod rules_checks;
mod rules_resources;

#[cfg(test)]
mod tests;

use serde::Serialize;

pub use facts::Facts;
pub use gather::{gather, DoctorError, DoctorOptions};

/// How bad a finding is; the exit status of `pgvault doctor` follows the worst one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, nothing to fix (or a check that could not run).
    Info,
    /// A gap to close before (or soon after) going to production.
    Warning,
    /// Data can be lost or the server can be taken over: fix now.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which part of the set-up a rule audits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    Backup,
    Security,
    Reliability,
    Resources,
}

/// One thing the audit found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id (`security.hba_trust`), for scripts and for docs/DOCTOR.md.
    pub id: &'static str,
    pub severity: Severity,
    pub area: Area,
    pub title: &'static str,
    /// What was seen, with the values (never a secret).
    pub evidence: String,
    /// How to fix it.
    pub fix: String,
    /// Where the advice comes from.
    pub reference: &'static str,
    /// A statement that applies the fix, when one statement does (`ALTER SYSTEM SET ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix_sql: Option<String>,
}

/// Counts by severity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub critical: usize,
    pub warning: usize,
    pub info: usize,
    /// The worst severity found (`null` when nothing was found).
    pub worst: Option<Severity>,
    /// The exit status `pgvault doctor` uses: 0 nothing above info, 3 warnings, 4 critical.
    pub exit_code: u8,
}

/// The findings, worst first, and their summary.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

impl Report {
    pub fn new(mut findings: Vec<Finding>) -> Report {
        // Stable: within a severity, the rule table's order.
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let count = |s| findings.iter().filter(|f| f.severity == s).count();
        let worst = findings.iter().map(|f| f.severity).max();
        let summary = Summary {
            critical: count(Severity::Critical),
            warning: count(Severity::Warning),
            info: count(Severity::Info),
            worst,
            exit_code: exit_code(worst),
        };
        Report { findings, summary }
    }
}

/// The project's exit convention: 0 nothing above info, 3 warnings, 4 critical findings.
pub fn exit_code(worst: Option<Severity>) -> u8 {
    match worst {
        Some(Severity::Critical) => 4,
        Some(Severity::Warning) => 3,
        Some(Severity::Info) | None => 0,
    }
}

/// Applies every rule of [`rules::RULES`] to `facts`.
pub fn judge(facts: &Facts) -> Report {
    let mut findings = Vec::new();
    for rule in rules::RULES {
        for hit in (rule.check)(facts) {
            findings.push(Finding {
                id: rule.id,
                severity: rule.severity,
                area: rule.area,
                title: rule.title,
                evidence: hit.evidence,
                fix: hit.fix.unwrap_or_else(|| rule.fix.to_string()),
                reference: rule.reference,
                fix_sql: hit.sql,
            });
        }
    }
    Report::new(findings)
}
