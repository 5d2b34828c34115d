//! Reads what the metrics report: the repository through [`Repository`] and the survey (the
//! backups' summaries, the WAL listing, the recoverable window, the last verify and drill
//! records), and `pg_stat_archiver` from the server when it can be reached. Nothing here writes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{ArchiverMetric, BackupMetric, DrillMetric, Snapshot, WalNewest};
use crate::config::Config;
use crate::repository::catalog::BackupKind;
use crate::repository::Repository;
use crate::schedule::{JobKind, Scheduler};
use crate::survey::{self, Times};

/// How long reading `pg_stat_archiver` may take before the server counts as unreachable.
const ARCHIVER_TIMEOUT: Duration = Duration::from_secs(15);

/// Collects a snapshot at `now`. `repo` is `None` when the repository could not be opened (the
/// snapshot then says `pgvault_up 0`); `ask_server` reads `pg_stat_archiver`.
pub async fn collect(config: &Config, repo: Option<&Repository>, ask_server: bool, now: DateTime<Utc>) -> Snapshot {
    let started = Instant::now();
    let mut s = Snapshot {
        collected_at: now,
        ..Snapshot::default()
    };
    from_config(config, now, &mut s);
    if let Some(repo) = repo {
        match from_repository(repo, &mut s).await {
            Ok(()) => s.repository_up = true,
            Err(e) => tracing::warn!("metrics: cannot read the repository: {e}"),
        }
    }
    if ask_server {
        s.archiver = Some(archiver(config).await);
    }
    s.wal_dropped = wal_dropped(config);
    s.collect_seconds = started.elapsed().as_secs_f64();
    s
}

/// The asynchronous archiver's count of dropped WAL, when this host has the data directory.
fn wal_dropped(config: &Config) -> Option<crate::archive::dropped::DroppedStats> {
    if !config.archive.is_async() {
        return None;
    }
    let pg_wal = config.postgres.pgdata.as_ref()?.join("pg_wal");
    let spool = crate::archive::async_mode::AsyncSpool::resolve(&pg_wal, &config.archive).ok()?;
    match crate::archive::dropped::read(spool.dir()) {
        Ok(stats) => Some(stats),
        Err(e) => {
            tracing::warn!("metrics: cannot read the dropped-WAL counter: {e}");
            None
        }
    }
}

/// The objectives and the backup age the schedule allows.
pub fn from_config(config: &Config, now: DateTime<Utc>, s: &mut Snapshot) {
    let secs = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| crate::units::parse_duration(v).ok())
            .map(|d| d.as_secs_f64())
    };
    s.objective_rpo_seconds = secs(&config.objectives.rpo);
    s.objective_rto_seconds = secs(&config.objectives.rto);
    s.backup_max_age_seconds = backup_max_ages(config, now)
        .into_iter()
        .map(|(kind, d)| (kind.to_string(), d.as_secs_f64()))
        .collect();
}

/// The age the newest full backup may reach under `[schedule] backup` (see [`backup_max_ages`]).
pub fn backup_max_age(config: &Config, now: DateTime<Utc>) -> Option<Duration> {
    backup_max_ages(config, now)
        .into_iter()
        .find(|(k, _)| *k == BackupKind::Full)
        .map(|(_, d)| d)
}

/// For each scheduled backup kind: the longest interval between two of its runs over the coming
/// 40 days (a slot where a bigger backup runs instead is not a run of it), plus a grace of that
/// interval again, capped at one hour (time for the backup itself to run).
pub fn backup_max_ages(config: &Config, now: DateTime<Utc>) -> Vec<(BackupKind, Duration)> {
    let (Ok(jobs), Ok(zone)) = (config.schedule.jobs(), config.schedule.zone()) else {
        return Vec::new();
    };
    let sched = Scheduler::new(zone, jobs, now, |_| None);
    let kinds: Vec<JobKind> = sched.jobs().map(|j| j.kind).collect();
    kinds
        .into_iter()
        .filter_map(|kind| {
            let backup = kind.backup_kind()?;
            let interval = sched.max_interval(kind, now, 40)?.to_std().ok()?;
            Some((backup, interval + interval.min(Duration::from_secs(3600))))
        })
        .collect()
}

async fn from_repository(repo: &Repository, s: &mut Snapshot) -> Result<(), String> {
    let survey = survey::survey(repo, Times::WindowEnds)
        .await
        .map_err(|e| e.to_string())?;
    let mut per_kind: BTreeMap<String, BackupMetric> = BTreeMap::new();
    for b in &survey.backups {
        let kind = serde_json::to_value(b.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "full".into());
        s.backup_bytes += b.stored_size;
        let metric = BackupMetric {
            kind: kind.clone(),
            stop_time: b.stop_time,
            duration_seconds: (b.stop_time - b.start_time).num_milliseconds().max(0) as f64 / 1000.0,
            size_bytes: b.size,
            stored_bytes: b.stored_size,
            count: 0,
        };
        let entry = per_kind.entry(kind).or_insert_with(|| metric.clone());
        let count = entry.count + 1;
        if metric.stop_time >= entry.stop_time {
            *entry = metric;
        }
        entry.count = count;
    }
    s.backups = per_kind.into_values().collect();
    let seg = repo.cluster().wal_segment_size;
    let segments: Vec<_> = survey.wal.iter().filter(|(n, _)| n.has_page_header()).collect();
    s.wal_bytes = survey.wal.iter().map(|(_, o)| o.size).sum();
    s.wal_segments = segments.len();
    s.wal_newest = segments
        .iter()
        .max_by_key(|(n, _)| (n.segment_number(seg), n.timeline))
        .map(|(n, o)| WalNewest {
            name: n.to_string(),
            timeline: n.timeline,
            segment_number: n.segment_number(seg),
            end_lsn: n.start_lsn(seg).0.saturating_add(seg),
            stored_at: o.last_modified,
        });
    let latest = survey.model.tree().latest();
    let windows = survey.model.windows(latest);
    if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
        s.window = Some((first.start_time, last.end_time));
    }
    match crate::verify::record::last(repo).await {
        Ok(v) => s.verify = v,
        Err(e) => tracing::warn!("metrics: {e}"),
    }
    match crate::drill::last_report(repo).await {
        Ok(d) => {
            s.drill = d.map(|d| DrillMetric {
                started_at: d.started_at,
                passed: d.passed,
                rto_seconds: d.rto_seconds,
                rpo_seconds: d.rpo_seconds,
            })
        }
        Err(e) => tracing::warn!("metrics: {e}"),
    }
    Ok(())
}

async fn archiver(config: &Config) -> Result<ArchiverMetric, String> {
    let read = async {
        let mut conn = crate::server::connect(config, false).await.map_err(|e| e.to_string())?;
        let status = crate::server::archiver_status(&mut conn, config).await;
        let _ = conn.close().await;
        status.map_err(|e| e.to_string())
    };
    let status = tokio::time::timeout(ARCHIVER_TIMEOUT, read)
        .await
        .map_err(|_| format!("no answer from the server in {}s", ARCHIVER_TIMEOUT.as_secs()))??;
    Ok(ArchiverMetric {
        failed_count: status.failed_count.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0),
        last_failed_wal: status.last_failed_wal,
        last_failed_time: status.last_failed_time.as_deref().and_then(parse_pg_time),
        last_archived_wal: status.last_archived_wal,
        last_archived_time: status.last_archived_time.as_deref().and_then(parse_pg_time),
    })
}

/// A `timestamptz::text` as PostgreSQL prints it (`2026-12-02 03:40:01.123456+00`, offsets
/// with or without minutes).
pub fn parse_pg_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    // Split the offset off: the last '+' or '-' after the time part.
    let cut = s.rfind(['+', '-']).filter(|&i| i > 10)?;
    let (local, offset) = s.split_at(cut);
    let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset[1..].split(':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    let seconds: i64 = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    let off = sign * (hours * 3600 + minutes * 60 + seconds);
    Some(naive.and_utc() - chrono::Duration::seconds(off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_time_text() {
        let t = parse_pg_time("2026-12-02 03:40:01.5+00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-02T03:40:01.500+00:00");
        let t = parse_pg_time("2026-12-02 05:40:01+02").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-02T03:40:01+00:00");
        let t = parse_pg_time("2026-12-02 00:10:01-03:30").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-02T03:40:01+00:00");
        assert!(parse_pg_time("yesterday").is_none());
    }
}
