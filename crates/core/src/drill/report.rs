//! A drill's report: what was restored to where, how long each phase took, the measured RTO
//! and RPO judged against `[objectives]`, and each check's result. Stored in the repository (as
//! JSON) and printed for people.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::checks::{CheckResult, Outcome};

/// Phase timings, in seconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Download, decrypt, decompress and write the backup (these overlap: one phase).
    pub restore: f64,
    /// Server start to a promoted server accepting connections (WAL fetched and replayed).
    pub wal_replay: f64,
    pub checks: f64,
}

/// An objective judged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObjectiveResult {
    pub name: String,
    /// The objective as configured (`"30min"`).
    pub objective: String,
    pub measured_seconds: f64,
    pub passed: bool,
    /// Objective minus measured, seconds (negative: missed by that much).
    pub margin_seconds: f64,
}

/// Judges a measured duration against an objective.
pub fn judge_objective(name: &str, objective: &str, limit: Duration, measured: Duration) -> ObjectiveResult {
    let m = measured.as_secs_f64();
    let l = limit.as_secs_f64();
    ObjectiveResult {
        name: name.to_string(),
        objective: objective.to_string(),
        measured_seconds: m,
        passed: m <= l,
        margin_seconds: l - m,
    }
}

/// What the server reported when recovery ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reached {
    pub replay_lsn: Option<String>,
    pub last_replayed_commit: Option<DateTime<Utc>>,
    pub timeline: Option<u32>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillReport {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub passed: bool,
    /// Why the drill could not run to its end (restore or recovery failed), when it did not.
    pub error: Option<String>,
    pub backup: Option<String>,
    pub pg_major: Option<u32>,
    /// The recovery target, described (`end of the archived WAL`, `time ...`).
    pub target: String,
    pub random: bool,
    pub sandbox: String,
    pub kept: bool,
    pub bytes_restored: u64,
    pub wal_segments: usize,
    pub timings: Timings,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    /// Where the RPO was measured from: `last replayed commit` or `backup stop time`.
    pub rpo_basis: Option<String>,
    pub reached: Reached,
    pub objectives: Vec<ObjectiveResult>,
    pub checks: Vec<CheckResult>,
    /// Server log lines that matter (errors), when something failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_log: Vec<String>,
}

impl DrillReport {
    /// Passed: no error, no failed check, every objective met.
    pub fn compute_passed(&mut self) {
        self.passed = self.error.is_none()
            && self.checks.iter().all(|c| c.outcome != Outcome::Fail)
            && self.objectives.iter().all(|o| o.passed);
    }

    /// The failed parts, one line each.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(format!("drill could not complete: {e}"));
        }
        for c in self.checks.iter().filter(|c| c.outcome == Outcome::Fail) {
            out.push(format!("check {} failed: {}", c.name, c.detail));
        }
        for o in self.objectives.iter().filter(|o| !o.passed) {
            out.push(format!(
                "{} objective {} missed: measured {}, over by {}",
                o.name,
                o.objective,
                secs(o.measured_seconds),
                secs(-o.margin_seconds)
            ));
        }
        out
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(s, "drill {} {verdict}", self.id);
        let _ = writeln!(
            s,
            "backup: {}  target: {}{}",
            self.backup.as_deref().unwrap_or("-"),
            self.target,
            if self.random { " (random point)" } else { "" }
        );
        if let Some(l) = &self.reached.replay_lsn {
            let t = self
                .reached
                .last_replayed_commit
                .map(|t| format!(", last replayed commit {}", t.to_rfc3339()))
                .unwrap_or_default();
            let _ = writeln!(s, "reached: LSN {l}{t}");
        }
        let _ = writeln!(
            s,
            "restored {} bytes, {} WAL segments; restore {}, WAL replay {}, checks {}",
            self.bytes_restored,
            self.wal_segments,
            secs(self.timings.restore),
            secs(self.timings.wal_replay),
            secs(self.timings.checks)
        );
        let rto = self.rto_seconds.map(secs).unwrap_or_else(|| "-".into());
        let rpo = self.rpo_seconds.map(secs).unwrap_or_else(|| "-".into());
        let basis = self
            .rpo_basis
            .as_deref()
            .map(|b| format!(" (from the {b})"))
            .unwrap_or_default();
        let _ = writeln!(s, "RTO {rto}  RPO {rpo}{basis}");
        for o in &self.objectives {
            let (word, m) = if o.passed {
                ("met", o.margin_seconds)
            } else {
                ("MISSED", -o.margin_seconds)
            };
            let rel = if o.passed { "margin" } else { "over by" };
            let _ = writeln!(s, "  {} objective {}: {word}, {rel} {}", o.name, o.objective, secs(m));
        }
        for c in &self.checks {
            let mark = match c.outcome {
                Outcome::Pass => "ok  ",
                Outcome::Fail => "FAIL",
                Outcome::Skipped => "skip",
            };
            let _ = writeln!(s, "  [{mark}] {}: {} ({})", c.name, c.detail, secs(c.seconds));
            for l in &c.lines {
                let _ = writeln!(s, "         {l}");
            }
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "error: {e}");
        }
        if !self.server_log.is_empty() {
            let _ = writeln!(s, "server log:");
            for l in &self.server_log {
                let _ = writeln!(s, "  {l}");
            }
        }
        if self.kept {
            let _ = writeln!(s, "sandbox kept: {}", self.sandbox);
        }
        s
    }
}

/// Seconds for people: `4.2s`, `29min 54s`, `5h 3min`, `30d 0h`.
pub fn secs(x: f64) -> String {
    let x = x.max(0.0);
    if x < 60.0 {
        return format!("{x:.1}s");
    }
    let s = x as u64;
    match s {
        0..=3599 => format!("{}min {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}min", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(secs(4.25), "4.2s");
        assert_eq!(secs(1794.9), "29min 54s");
        assert_eq!(secs(18_200.0), "5h 3min");
        assert_eq!(secs(2_592_000.0), "30d 0h");
        assert_eq!(secs(-3.0), "0.0s");
    }

    #[test]
    fn objectives_pass_and_fail_with_margin() {
        let ok = judge_objective("rto", "30min", Duration::from_secs(1800), Duration::from_secs(600));
        assert!(ok.passed);
        assert_eq!(ok.margin_seconds, 1200.0);
        let edge = judge_objective("rpo", "5min", Duration::from_secs(300), Duration::from_secs(300));
        assert!(edge.passed);
        let miss = judge_objective("rpo", "5min", Duration::from_secs(300), Duration::from_secs(420));
        assert!(!miss.passed);
        assert_eq!(miss.margin_seconds, -120.0);
    }

    fn report() -> DrillReport {
        DrillReport {
            id: "20261202-010000".into(),
            started_at: Utc::now(),
            passed: false,
            error: None,
            backup: Some("b".into()),
            pg_major: Some(15),
            target: "end".into(),
            random: false,
            sandbox: "/tmp/x".into(),
            kept: false,
            bytes_restored: 1,
            wal_segments: 1,
            timings: Timings::default(),
            rto_seconds: Some(1.0),
            rpo_seconds: Some(1.0),
            rpo_basis: None,
            reached: Reached::default(),
            objectives: vec![],
            checks: vec![],
            server_log: vec![],
        }
    }

    #[test]
    fn verdict_follows_checks_objectives_and_errors() {
        let mut r = report();
        r.checks.push(CheckResult::new(
            "amcheck",
            Outcome::Skipped,
            "n/a",
            std::time::Instant::now(),
        ));
        r.compute_passed();
        assert!(r.passed, "a skip is not a failure");
        r.objectives.push(judge_objective(
            "rto",
            "1s",
            Duration::from_secs(1),
            Duration::from_secs(2),
        ));
        r.compute_passed();
        assert!(!r.passed);
        assert!(r.failures()[0].contains("rto objective 1s missed"));
        r.objectives.clear();
        r.checks.push(CheckResult::new(
            "assertion a.sql",
            Outcome::Fail,
            "returned false",
            std::time::Instant::now(),
        ));
        r.compute_passed();
        assert!(!r.passed);
        assert!(r.render().contains("[FAIL] assertion a.sql: returned false"));
        let json = serde_json::to_string(&r).expect("json");
        let back: DrillReport = serde_json::from_str(&json).expect("back");
        assert_eq!(back.checks.len(), 2);
    }
}
