//! The rendered text read back by a Prometheus text-format parser.

use chrono::{DateTime, Utc};
use prometheus_parse::{Scrape, Value};

use super::render;
use crate::metrics::{ArchiverMetric, BackupMetric, DrillMetric, JobMetric, Snapshot, WalNewest};
use crate::verify::record::VerifyRecord;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn full() -> Snapshot {
    Snapshot {
        collected_at: t("2026-12-02T04:00:00Z"),
        collect_seconds: 0.25,
        repository_up: true,
        backups: vec![BackupMetric {
            kind: "full".into(),
            stop_time: t("2026-12-02T02:10:00Z"),
            duration_seconds: 600.0,
            size_bytes: 1 << 30,
            stored_bytes: 300 << 20,
            count: 3,
        }],
        backup_bytes: 900 << 20,
        wal_bytes: 64 << 20,
        wal_segments: 4,
        wal_newest: Some(WalNewest {
            name: "000000010000000000000007".into(),
            timeline: 1,
            segment_number: 7,
            end_lsn: 8 << 24,
            stored_at: t("2026-12-02T03:59:00Z"),
        }),
        window: Some((t("2026-12-01T02:00:00Z"), Some(t("2026-12-02T03:58:59Z")))),
        verify: Some(VerifyRecord {
            id: "20261202-030000".into(),
            finished_at: t("2026-12-02T03:00:00Z"),
            scope: None,
            whole: false,
            findings: 2,
            backups: 3,
            stored_bytes: 10,
            duration_ms: 1500,
        }),
        drill: Some(DrillMetric {
            started_at: t("2026-12-01T05:00:00Z"),
            passed: true,
            rto_seconds: Some(42.5),
            rpo_seconds: None,
        }),
        archiver: Some(Ok(ArchiverMetric {
            failed_count: 3,
            last_failed_wal: Some("000000010000000000000006".into()),
            last_failed_time: Some(t("2026-12-02T03:30:00Z")),
            last_archived_wal: None,
            last_archived_time: Some(t("2026-12-02T03:59:00Z")),
        })),
        wal_dropped: Some(crate::archive::dropped::DroppedStats {
            count: 2,
            bytes: 32 << 20,
            first: Some(crate::wal::WalFileName::parse("000000010000000000000007").expect("name")),
            last: Some(crate::wal::WalFileName::parse("000000010000000000000008").expect("name")),
            at: Some(t("2026-12-02T03:45:00Z")),
        }),
        objective_rpo_seconds: Some(300.0),
        objective_rto_seconds: Some(1800.0),
        backup_max_age_seconds: vec![("full".into(), 90000.0), ("incr".into(), 7200.0)],
        jobs: vec![
            JobMetric {
                job: "backup".into(),
                runs: 5,
                failures: 1,
                skipped: 2,
                last_end: Some(t("2026-12-02T02:10:00Z")),
                last_duration_seconds: Some(600.0),
                last_success: Some(true),
                next_run: Some(t("2026-12-03T02:00:00Z")),
            },
            JobMetric {
                job: "backup_incr".into(),
                runs: 3,
                ..JobMetric::default()
            },
        ],
    }
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(s: &Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn every_family_parses_with_help_type_and_its_value() {
    let text = render(&full());
    let s = parse(&text);
    let full = Some(("type", "full"));
    assert_eq!(value(&s, "pgvault_up", None), Some(1.0));
    assert_eq!(
        value(&s, "pgvault_backup_last_success_timestamp_seconds", full),
        Some(t("2026-12-02T02:10:00Z").timestamp() as f64)
    );
    assert_eq!(value(&s, "pgvault_backup_last_duration_seconds", full), Some(600.0));
    assert_eq!(
        value(&s, "pgvault_backup_last_size_bytes", full),
        Some(f64::from(1u32 << 30))
    );
    assert_eq!(value(&s, "pgvault_backup_max_age_seconds", full), Some(90000.0));
    assert_eq!(
        value(&s, "pgvault_backup_max_age_seconds", Some(("type", "incr"))),
        Some(7200.0)
    );
    assert_eq!(value(&s, "pgvault_wal_newest_segment_number", None), Some(7.0));
    assert_eq!(value(&s, "pgvault_wal_newest_age_seconds", None), Some(60.0));
    assert_eq!(
        value(&s, "pgvault_repository_size_bytes", Some(("part", "wal"))),
        Some(f64::from(64u32 << 20))
    );
    assert_eq!(value(&s, "pgvault_verify_last_success", None), Some(0.0));
    assert_eq!(value(&s, "pgvault_verify_last_duration_seconds", None), Some(1.5));
    assert_eq!(value(&s, "pgvault_drill_last_success", None), Some(1.0));
    assert_eq!(value(&s, "pgvault_drill_last_rto_seconds", None), Some(42.5));
    assert_eq!(
        value(&s, "pgvault_drill_last_rpo_seconds", None),
        None,
        "no value, no sample"
    );
    assert_eq!(value(&s, "pgvault_archiver_failed_total", None), Some(3.0));
    assert_eq!(
        value(
            &s,
            "pgvault_archiver_last_failed_wal_info",
            Some(("wal", "000000010000000000000006"))
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, "pgvault_objective_rpo_seconds", None), Some(300.0));
    assert_eq!(value(&s, "pgvault_job_runs_total", Some(("kind", "backup"))), Some(5.0));
    assert_eq!(
        value(&s, "pgvault_job_runs_total", Some(("kind", "backup_incr"))),
        Some(3.0)
    );
    assert_eq!(
        value(&s, "pgvault_job_failures_total", Some(("kind", "backup"))),
        Some(1.0)
    );
    // Counters are typed as counters; every sample's family has HELP text.
    assert!(s
        .samples
        .iter()
        .filter(|x| x.metric.ends_with("_total"))
        .all(|x| matches!(x.value, Value::Counter(_))));
    for x in &s.samples {
        let family = x.metric.trim_end_matches("_total");
        assert!(
            s.docs.contains_key(&x.metric) || s.docs.contains_key(family),
            "{} has no HELP",
            x.metric
        );
    }
    assert!(text.contains("# TYPE pgvault_job_runs_total counter\n"), "{text}");
}

#[test]
fn an_unreadable_repository_reports_down_and_no_made_up_values() {
    let s = Snapshot {
        collected_at: t("2026-12-02T04:00:00Z"),
        archiver: Some(Err("connection refused".into())),
        ..Snapshot::default()
    };
    let p = parse(&render(&s));
    assert_eq!(value(&p, "pgvault_up", None), Some(0.0));
    assert_eq!(value(&p, "pgvault_archiver_up", None), Some(0.0));
    assert_eq!(value(&p, "pgvault_repository_size_bytes", None), None);
    assert_eq!(value(&p, "pgvault_archiver_failed_total", None), None);
    assert_eq!(value(&p, "pgvault_backup_last_success_timestamp_seconds", None), None);
}

#[test]
fn label_values_are_escaped() {
    let mut s = full();
    s.archiver = Some(Ok(ArchiverMetric {
        last_failed_wal: Some("a\"b\\c".into()),
        ..ArchiverMetric::default()
    }));
    let text = render(&s);
    assert!(
        text.contains(r#"pgvault_archiver_last_failed_wal_info{wal="a\"b\\c"} 1"#),
        "{text}"
    );
}

/// Every metric the alert rules and the Grafana dashboard read is one the renderer writes (a typo
/// in a rule would make it silently never fire).
#[test]
fn rules_and_dashboard_read_only_rendered_metrics() {
    let mut every = full();
    if let Some(d) = every.drill.as_mut() {
        d.rpo_seconds = Some(12.0);
    }
    let text = render(&every);
    let rendered: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard = include_str!("../../../../docs/grafana/pgvault.json");
    serde_json::from_str::<serde_json::Value>(dashboard).expect("the dashboard is JSON");
    for (what, source) in [("alert rules", crate::metrics::ALERT_RULES), ("dashboard", dashboard)] {
        let mut seen = 0;
        for (i, _) in source.match_indices("pgvault_") {
            let name: String = source[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Rule and group names (`pgvault`, `PgvaultDrillFailed`) are not metrics.
            if name == "pgvault_" {
                continue;
            }
            seen += 1;
            assert!(
                rendered.contains(name.as_str()),
                "{what} read {name}, which is never rendered"
            );
        }
        assert!(seen > 5, "{what}: {seen}");
    }
}
