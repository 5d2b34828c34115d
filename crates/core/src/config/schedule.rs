//! `[schedule]` and `[metrics]`: what `pgvault schedule` runs when, and where it serves metrics.
//! Checked at load so that a bad cron line or address fails `pgvault schedule` at start, naming
//! the key, rather than at 2 a.m.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::schedule::{CronExpr, Job, JobKind, ScheduleZone};

/// `[schedule]`: one 5-field cron expression per job; an absent key is a job not scheduled.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Full backups.
    pub backup: Option<String>,
    pub expire: Option<String>,
    pub verify: Option<String>,
    pub drill: Option<String>,
    /// Incremental backups (`pgvault backup --type incr`, PostgreSQL 17+).
    pub backup_incr: Option<String>,
    /// Differential backups (`pgvault backup --type diff`, PostgreSQL 17+).
    pub backup_diff: Option<String>,
    /// `UTC` (default), `local`, or an IANA name (`Europe/Berlin`).
    pub timezone: Option<String>,
}

/// Default of `[metrics] refresh`.
pub const DEFAULT_METRICS_REFRESH: &str = "1min";

/// `[metrics]`: the daemon's Prometheus endpoint; absent means no endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `127.0.0.1:9856`, an address without a port (the default port), or `localhost[:port]`.
    pub listen: Option<String>,
    /// How often the daemon re-reads the repository for the metrics (default `1min`).
    pub refresh: Option<String>,
}

impl ScheduleConfig {
    fn entries(&self) -> [(JobKind, &Option<String>); 6] {
        [
            (JobKind::Backup, &self.backup),
            (JobKind::BackupDiff, &self.backup_diff),
            (JobKind::BackupIncr, &self.backup_incr),
            (JobKind::Expire, &self.expire),
            (JobKind::Verify, &self.verify),
            (JobKind::Drill, &self.drill),
        ]
    }

    /// The scheduled jobs (none when the section is absent or empty).
    pub fn jobs(&self) -> Result<Vec<Job>, (String, String)> {
        let mut jobs = Vec::new();
        for (kind, expr) in self.entries() {
            if let Some(e) = expr {
                let cron = CronExpr::parse(e).map_err(|err| (format!("schedule.{kind}"), err.to_string()))?;
                jobs.push(Job { kind, cron });
            }
        }
        Ok(jobs)
    }

    /// The time zone the expressions are read in.
    pub fn zone(&self) -> Result<ScheduleZone, (String, String)> {
        match &self.timezone {
            None => Ok(ScheduleZone::Utc),
            Some(tz) => ScheduleZone::parse(tz).map_err(|why| ("schedule.timezone".to_string(), why)),
        }
    }

    /// The first bad key, with why.
    pub(super) fn check(&self) -> Option<(String, String)> {
        self.jobs().err().or_else(|| self.zone().err())
    }
}

impl MetricsConfig {
    /// The address to serve `/metrics` on, `None` when `listen` is not set.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        let Some(listen) = self.listen.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let port = crate::metrics::DEFAULT_PORT;
        if let Ok(a) = listen.parse::<SocketAddr>() {
            return Ok(Some(a));
        }
        if let Ok(ip) = listen.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(Some(SocketAddr::new(ip, port)));
        }
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        match listen.split_once(':') {
            None if listen == "localhost" => Ok(Some(SocketAddr::new(localhost, port))),
            Some(("localhost", p)) => p
                .parse::<u16>()
                .map(|p| Some(SocketAddr::new(localhost, p)))
                .map_err(|_| format!("'{p}' is not a port number")),
            _ => Err(format!(
                "'{listen}' is not an address: write e.g. \"127.0.0.1:{port}\" (an IP address, a port optional)"
            )),
        }
    }

    /// How often the daemon refreshes the metrics.
    pub fn refresh(&self) -> Result<Duration, String> {
        let text = self.refresh.as_deref().unwrap_or(DEFAULT_METRICS_REFRESH);
        let d = crate::units::parse_duration(text).map_err(|e| e.to_string())?;
        if d < Duration::from_secs(1) {
            return Err("must be at least 1s".into());
        }
        Ok(d)
    }

    pub(super) fn check(&self) -> Option<(String, String)> {
        if let Err(why) = self.listen_addr() {
            return Some(("metrics.listen".into(), why));
        }
        self.refresh().err().map(|why| ("metrics.refresh".into(), why))
    }
}
