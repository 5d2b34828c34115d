//! A [`Snapshot`] in Prometheus' text exposition format (version 0.0.4): one `# HELP` and
//! `# TYPE` per family, samples after; times as Unix seconds, sizes in bytes, counts as `_total`.
//! A family with no value (no drill ran yet) is left out rather than given a made-up number.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::Snapshot;

/// The content type to serve the text with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out {
    text: String,
}

type Labels<'a> = &'a [(&'a str, &'a str)];

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.text.push_str(name);
            if !labels.is_empty() {
                self.text.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    let _ = write!(self.text, "{k}=\"{}\"", escape(v));
                }
                self.text.push('}');
            }
            let _ = writeln!(self.text, " {}", number(*value));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        let samples: Vec<(Labels<'_>, f64)> = value.map(|v| (&[][..], v)).into_iter().collect();
        self.family(name, "gauge", help, &samples);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The snapshot as Prometheus text.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out { text: String::new() };
    o.gauge(
        "pgvault_up",
        "Whether the repository could be read at the last refresh (1) or not (0).",
        Some(flag(s.repository_up)),
    );
    o.gauge(
        "pgvault_collect_timestamp_seconds",
        "When these metrics were collected.",
        Some(ts(s.collected_at)),
    );
    o.gauge(
        "pgvault_collect_duration_seconds",
        "How long collecting these metrics took.",
        Some(s.collect_seconds),
    );
    backups(&mut o, s);
    wal(&mut o, s);
    checks(&mut o, s);
    archiver(&mut o, s);
    wal_dropped(&mut o, s);
    o.gauge(
        "pgvault_objective_rpo_seconds",
        "The recovery point objective ([objectives] rpo).",
        s.objective_rpo_seconds,
    );
    o.gauge(
        "pgvault_objective_rto_seconds",
        "The recovery time objective ([objectives] rto).",
        s.objective_rto_seconds,
    );
    jobs(&mut o, s);
    o.text
}

fn backups(o: &mut Out, s: &Snapshot) {
    let per = |f: &dyn Fn(&super::BackupMetric) -> f64| -> Vec<(Labels<'_>, f64)> {
        s.backups.iter().map(|b| (vec_label(&b.kind), f(b))).collect()
    };
    o.family(
        "pgvault_backup_last_success_timestamp_seconds",
        "gauge",
        "When the newest complete backup of this type stopped.",
        &per(&|b| ts(b.stop_time)),
    );
    o.family(
        "pgvault_backup_last_duration_seconds",
        "gauge",
        "How long the newest complete backup of this type took.",
        &per(&|b| b.duration_seconds),
    );
    o.family(
        "pgvault_backup_last_size_bytes",
        "gauge",
        "Size of the cluster in the newest backup of this type.",
        &per(&|b| b.size_bytes as f64),
    );
    o.family(
        "pgvault_backup_last_stored_bytes",
        "gauge",
        "Stored (compressed, encrypted) size of the newest backup of this type.",
        &per(&|b| b.stored_bytes as f64),
    );
    o.family(
        "pgvault_backups",
        "gauge",
        "Complete backups of this type in the repository.",
        &per(&|b| b.count as f64),
    );
    let max_age: Vec<(Labels<'_>, f64)> = s
        .backup_max_age_seconds
        .iter()
        .map(|(kind, a)| (vec_label(kind), *a))
        .collect();
    o.family(
        "pgvault_backup_max_age_seconds",
        "gauge",
        "The age the newest backup of this type may reach under [schedule] (longest interval plus grace).",
        &max_age,
    );
    if s.repository_up {
        o.family(
            "pgvault_repository_size_bytes",
            "gauge",
            "Bytes stored in the repository, by part.",
            &[
                (&[("part", "backups")], s.backup_bytes as f64),
                (&[("part", "wal")], s.wal_bytes as f64),
            ],
        );
    }
}

/// One `type` label; leaked-free: the label set lives as long as the snapshot.
fn vec_label(kind: &str) -> Labels<'_> {
    match kind {
        "full" => &[("type", "full")],
        "incr" => &[("type", "incr")],
        "diff" => &[("type", "diff")],
        _ => &[("type", "other")],
    }
}

fn wal(o: &mut Out, s: &Snapshot) {
    if s.repository_up {
        o.gauge(
            "pgvault_wal_segments",
            "WAL segments in the archive.",
            Some(s.wal_segments as f64),
        );
    }
    let n = s.wal_newest.as_ref();
    o.gauge(
        "pgvault_wal_newest_segment_number",
        "Segment number (position in the WAL stream) of the newest archived segment.",
        n.map(|n| n.segment_number as f64),
    );
    o.gauge(
        "pgvault_wal_newest_timeline",
        "Timeline of the newest archived segment.",
        n.map(|n| f64::from(n.timeline)),
    );
    o.gauge(
        "pgvault_wal_newest_end_lsn_bytes",
        "LSN just past the end of the newest archived segment, in bytes.",
        n.map(|n| n.end_lsn as f64),
    );
    o.gauge(
        "pgvault_wal_newest_timestamp_seconds",
        "When the store received the newest archived segment.",
        n.map(|n| ts(n.stored_at)),
    );
    o.gauge(
        "pgvault_wal_newest_age_seconds",
        "Age of the newest archived segment at collection (alert on time() - pgvault_wal_newest_timestamp_seconds).",
        n.map(|n| (s.collected_at - n.stored_at).num_milliseconds() as f64 / 1000.0),
    );
    o.gauge(
        "pgvault_recovery_window_start_timestamp_seconds",
        "Earliest point of the recoverable window on the newest timeline.",
        s.window.map(|w| ts(w.0)),
    );
    o.gauge(
        "pgvault_recovery_window_end_timestamp_seconds",
        "Latest point (last commit) of the recoverable window on the newest timeline.",
        s.window.and_then(|w| w.1).map(ts),
    );
}

fn checks(o: &mut Out, s: &Snapshot) {
    let v = s.verify.as_ref();
    o.gauge(
        "pgvault_verify_last_timestamp_seconds",
        "When the last verify finished.",
        v.map(|v| ts(v.finished_at)),
    );
    o.gauge(
        "pgvault_verify_last_success",
        "Whether the last verify found the repository whole (1) or found damage (0).",
        v.map(|v| flag(v.whole)),
    );
    o.gauge(
        "pgvault_verify_last_findings",
        "Problems the last verify found.",
        v.map(|v| v.findings as f64),
    );
    o.gauge(
        "pgvault_verify_last_duration_seconds",
        "How long the last verify took.",
        v.map(|v| v.duration_ms as f64 / 1000.0),
    );
    let d = s.drill.as_ref();
    o.gauge(
        "pgvault_drill_last_timestamp_seconds",
        "When the last restore drill started.",
        d.map(|d| ts(d.started_at)),
    );
    o.gauge(
        "pgvault_drill_last_success",
        "Whether the last restore drill passed (1) or failed (0).",
        d.map(|d| flag(d.passed)),
    );
    o.gauge(
        "pgvault_drill_last_rto_seconds",
        "Recovery time the last drill measured.",
        d.and_then(|d| d.rto_seconds),
    );
    o.gauge(
        "pgvault_drill_last_rpo_seconds",
        "Recovery point the last drill measured.",
        d.and_then(|d| d.rpo_seconds),
    );
}

fn wal_dropped(o: &mut Out, s: &Snapshot) {
    let Some(d) = &s.wal_dropped else { return };
    o.family(
        "pgvault_wal_dropped_segments_total",
        "counter",
        "WAL segments the asynchronous archiver dropped at archive_push_queue_max (never stored).",
        &[(&[], d.count as f64)],
    );
    o.gauge(
        "pgvault_wal_dropped_last_timestamp_seconds",
        "When the asynchronous archiver last dropped a WAL segment.",
        d.at.map(ts),
    );
}

fn archiver(o: &mut Out, s: &Snapshot) {
    let Some(a) = &s.archiver else { return };
    o.gauge(
        "pgvault_archiver_up",
        "Whether pg_stat_archiver could be read from the server (1) or not (0).",
        Some(flag(a.is_ok())),
    );
    let Ok(a) = a else { return };
    o.family(
        "pgvault_archiver_failed_total",
        "counter",
        "Failed WAL archiving attempts (pg_stat_archiver.failed_count).",
        &[(&[], a.failed_count as f64)],
    );
    o.gauge(
        "pgvault_archiver_last_failed_timestamp_seconds",
        "When archiving last failed (pg_stat_archiver.last_failed_time).",
        a.last_failed_time.map(ts),
    );
    o.gauge(
        "pgvault_archiver_last_archived_timestamp_seconds",
        "When a WAL file was last archived (pg_stat_archiver.last_archived_time).",
        a.last_archived_time.map(ts),
    );
    if let Some(w) = &a.last_failed_wal {
        o.family(
            "pgvault_archiver_last_failed_wal_info",
            "gauge",
            "The WAL file whose archiving last failed (pg_stat_archiver.last_failed_wal), as a label.",
            &[(&[("wal", w.as_str())], 1.0)],
        );
    }
}

fn jobs(o: &mut Out, s: &Snapshot) {
    let per = |f: &dyn Fn(&super::JobMetric) -> Option<f64>| -> Vec<(Labels<'_>, f64)> {
        s.jobs
            .iter()
            .filter_map(|j| f(j).map(|v| (job_label(&j.job), v)))
            .collect()
    };
    o.family(
        "pgvault_job_runs_total",
        "counter",
        "Jobs the scheduler ran, by job.",
        &per(&|j| Some(j.runs as f64)),
    );
    o.family(
        "pgvault_job_failures_total",
        "counter",
        "Jobs the scheduler ran that failed, by job.",
        &per(&|j| Some(j.failures as f64)),
    );
    o.family(
        "pgvault_job_skipped_total",
        "counter",
        "Scheduled slots not run (the job was still running, the repository lock was held, or a bigger backup ran then).",
        &per(&|j| Some(j.skipped as f64)),
    );
    o.family(
        "pgvault_job_last_end_timestamp_seconds",
        "gauge",
        "When the job last ended.",
        &per(&|j| j.last_end.map(ts)),
    );
    o.family(
        "pgvault_job_last_duration_seconds",
        "gauge",
        "How long the job's last run took.",
        &per(&|j| j.last_duration_seconds),
    );
    o.family(
        "pgvault_job_last_success",
        "gauge",
        "Whether the job's last run succeeded (1) or failed (0).",
        &per(&|j| j.last_success.map(flag)),
    );
    o.family(
        "pgvault_job_next_run_timestamp_seconds",
        "gauge",
        "When the job runs next.",
        &per(&|j| j.next_run.map(ts)),
    );
}

/// The job's label is `kind`, not `job`: Prometheus owns `job` (the scrape job) and would rename
/// ours to `exported_job`.
fn job_label(job: &str) -> Labels<'_> {
    match job {
        "backup" => &[("kind", "backup")],
        "backup_diff" => &[("kind", "backup_diff")],
        "backup_incr" => &[("kind", "backup_incr")],
        "expire" => &[("kind", "expire")],
        "verify" => &[("kind", "verify")],
        "drill" => &[("kind", "drill")],
        _ => &[("kind", "other")],
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
