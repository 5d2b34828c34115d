//! Recovery targets: parsing them, choosing the backup to start from, and refusing a target that
//! lies outside what the repository can recover, before a single byte is written.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

use crate::lsn::Lsn;
use crate::repository::BackupCatalog;

/// Where recovery should stop.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Replay all archived WAL (no recovery target).
    End,
    Time(DateTime<FixedOffset>),
    Lsn(Lsn),
    Xid(u64),
    Name(String),
    /// Stop as soon as the backup is consistent.
    Immediate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetAction {
    Promote,
    Pause,
    Shutdown,
}

impl std::str::FromStr for TargetAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "promote" => Ok(TargetAction::Promote),
            "pause" => Ok(TargetAction::Pause),
            "shutdown" => Ok(TargetAction::Shutdown),
            _ => Err(format!("'{s}' is not one of promote, pause, shutdown")),
        }
    }
}

impl TargetAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("'{0}' is not a time with a zone; write it like 2026-11-23 03:12:00+00 or 2026-11-23T03:12:00Z (a time without a zone is ambiguous)")]
    BadTime(String),
    #[error("the repository has no complete backup yet: run `pgvault backup` first")]
    NoBackups,
    #[error("{target} is outside the recoverable window {window}: {why}")]
    OutsideWindow { target: String, window: String, why: String },
    #[error("backup {id} cannot reach {target}: {why}; pick an older backup (see `pgvault list`) or omit --backup")]
    BackupTooNew { id: String, target: String, why: String },
    #[error("no backup in the repository is older than transaction {xid}: the oldest backup already contains it")]
    XidTooOld { xid: u64 },
}

/// Parses a target time; a zone is required.
pub fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, TargetError> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d);
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(d) = DateTime::parse_from_str(t, fmt) {
            return Ok(d);
        }
    }
    if let Some(rest) = t.strip_suffix(" UTC").or_else(|| t.strip_suffix("Z")) {
        for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(n) = NaiveDateTime::parse_from_str(rest, fmt) {
                return Ok(n.and_utc().fixed_offset());
            }
        }
    }
    Err(TargetError::BadTime(s.to_string()))
}

/// Whether a transaction id was still open or not yet started at the snapshot `xmin:xmax:xip,…`.
fn xid_after_snapshot(xid: u64, snapshot: &str) -> Option<bool> {
    let mut parts = snapshot.split(':');
    let _xmin: u64 = parts.next()?.parse().ok()?;
    let xmax: u64 = parts.next()?.parse().ok()?;
    let xip = parts.next().unwrap_or("");
    if xid >= xmax {
        return Some(true);
    }
    Some(xip.split(',').filter(|s| !s.is_empty()).any(|x| x.parse::<u64>().ok() == Some(xid)))
}

/// `xmax` of a `pg_current_snapshot()` text (`xmin:xmax:xip,…`): the next full transaction id.
pub fn snapshot_xmax(snapshot: &str) -> Option<u64> {
    snapshot.split(':').nth(1)?.parse().ok()
}

/// The full 64-bit transaction id (epoch included) meant by `xid`.
///
/// A value above 2^32 already is one (`pg_current_xact_id()`, `txid_current()`). A 32-bit value
/// (`xmin`, `pg_stat_activity.backend_xid`, what PostgreSQL's logs print) is ambiguous after the
/// first wraparound; like PostgreSQL's own circular comparison, it is taken as the transaction
/// nearest to `reference` (the next full xid seen at the newest backup), within 2^31 either way.
/// Choosing a backup compares full ids; PostgreSQL is given the low 32 bits it expects.
pub fn widen_xid(xid: u64, reference: Option<u64>) -> u64 {
    if xid > u64::from(u32::MAX) {
        return xid;
    }
    let Some(reference) = reference else { return xid };
    let epoch = reference >> 32;
    [epoch.checked_sub(1), Some(epoch), epoch.checked_add(1)]
        .into_iter()
        .flatten()
        .map(|e| (e << 32) | xid)
        .min_by_key(|c| c.abs_diff(reference))
        .unwrap_or(xid)
}

/// The archive's reach: the newest WAL archived, for the window's upper end.
#[derive(Clone, Debug, Default)]
pub struct ArchiveReach {
    pub newest_wal_time: Option<DateTime<Utc>>,
    pub newest_wal_end: Option<Lsn>,
}

fn window_text(backups: &[BackupCatalog], reach: &ArchiveReach) -> String {
    let from = backups.first().map(|b| b.stop_time.to_rfc3339()).unwrap_or_default();
    let to = reach
        .newest_wal_time
        .or_else(|| backups.last().map(|b| b.stop_time))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    format!("[{from} .. {to}]")
}

/// Picks the backup to restore for `target`, or explains why none fits. `backups` are sorted
/// oldest first; `explicit` is a backup id the user named.
pub fn choose<'a>(
    backups: &'a [BackupCatalog],
    explicit: Option<&str>,
    target: &Target,
    reach: &ArchiveReach,
) -> Result<&'a BackupCatalog, TargetError> {
    let newest = backups.last().ok_or(TargetError::NoBackups)?;
    let window = window_text(backups, reach);
    let outside = |why: String| TargetError::OutsideWindow { target: describe(target), window: window.clone(), why };

    // The upper end: nothing beyond the newest archived WAL can be replayed.
    match target {
        Target::Time(t) => {
            let t = t.with_timezone(&Utc);
            let upper = reach.newest_wal_time.unwrap_or(newest.stop_time).max(newest.stop_time);
            if t > upper {
                return Err(outside(format!(
                    "it is after the newest archived WAL ({}); WAL written later has not been archived",
                    upper.to_rfc3339()
                )));
            }
            if t < backups[0].stop_time {
                return Err(outside(format!(
                    "it is before the end of the oldest backup ({}, finished {})",
                    backups[0].id,
                    backups[0].stop_time.to_rfc3339()
                )));
            }
        }
        Target::Lsn(l) => {
            let upper = reach.newest_wal_end.unwrap_or(newest.stop_lsn).max(newest.stop_lsn);
            if *l > upper {
                return Err(outside(format!("it is beyond the end of the newest archived WAL ({upper})")));
            }
            if *l < backups[0].stop_lsn {
                return Err(outside(format!(
                    "it is before the end of the oldest backup ({}, consistent at {})",
                    backups[0].id, backups[0].stop_lsn
                )));
            }
        }
        _ => {}
    }

    let fits = |b: &BackupCatalog| -> Result<(), String> {
        match target {
            Target::Time(t) if t.with_timezone(&Utc) < b.stop_time => {
                Err(format!("it finished at {}, after the target", b.stop_time.to_rfc3339()))
            }
            Target::Lsn(l) if *l < b.stop_lsn => Err(format!("it is consistent only from {}", b.stop_lsn)),
            Target::Xid(x) => match b.snapshot_after_stop.as_deref().and_then(|s| xid_after_snapshot(*x, s)) {
                Some(false) => Err(format!("transaction {x} had already ended when it finished")),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    };

    if let Some(id) = explicit.filter(|i| *i != "latest") {
        let b = backups.iter().find(|b| b.id == id).ok_or_else(|| TargetError::BackupTooNew {
            id: id.to_string(),
            target: describe(target),
            why: "no such backup".into(),
        })?;
        fits(b).map_err(|why| TargetError::BackupTooNew { id: b.id.clone(), target: describe(target), why })?;
        return Ok(b);
    }
    match backups.iter().rev().find(|b| fits(b).is_ok()) {
        Some(b) => Ok(b),
        None => match target {
            Target::Xid(x) => Err(TargetError::XidTooOld { xid: *x }),
            _ => Err(outside("no backup finished before it".into())),
        },
    }
}

pub fn describe(target: &Target) -> String {
    match target {
        Target::End => "the end of the archive".into(),
        Target::Time(t) => format!("time {}", t.to_rfc3339()),
        Target::Lsn(l) => format!("LSN {l}"),
        Target::Xid(x) => format!("transaction {x}"),
        Target::Name(n) => format!("restore point '{n}'"),
        Target::Immediate => "the end of the backup".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_a_zone() {
        assert!(parse_time("2026-11-23 03:12:00+00").is_ok());
        assert!(parse_time("2026-11-23 03:12:00.123456+02:00").is_ok());
        assert!(parse_time("2026-11-23T03:12:00Z").is_ok());
        assert!(parse_time("2026-11-23 03:12:00 UTC").is_ok());
        assert!(matches!(parse_time("2026-11-23 03:12:00"), Err(TargetError::BadTime(_))));
        assert!(matches!(parse_time("yesterday"), Err(TargetError::BadTime(_))));
        let a = parse_time("2026-11-23 05:12:00+02").unwrap();
        let b = parse_time("2026-11-23T03:12:00Z").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn xids_widen_to_the_nearest_epoch() {
        let e3 = 3u64 << 32;
        // Full ids pass through; without a reference a 32-bit id stays as it is.
        assert_eq!(widen_xid(e3 | 5, Some(7)), e3 | 5);
        assert_eq!(widen_xid(500, None), 500);
        // Near the reference, in the same epoch.
        assert_eq!(widen_xid(1000, Some(e3 | 2000)), e3 | 1000);
        assert_eq!(widen_xid(3000, Some(e3 | 2000)), e3 | 3000);
        // Just after a wraparound: a large 32-bit id belongs to the previous epoch...
        assert_eq!(widen_xid(0xFFFF_FF00, Some(e3 | 0x10)), (2u64 << 32) | 0xFFFF_FF00);
        // ...and just before one, a small id to the next.
        assert_eq!(widen_xid(0x10, Some(e3 | 0xFFFF_FF00)), (4u64 << 32) | 0x10);
        // Epoch 0 has no previous epoch.
        assert_eq!(widen_xid(0xFFFF_FF00, Some(0x10)), 0xFFFF_FF00);
        assert_eq!(snapshot_xmax("700:790:750"), Some(790));
        // After the first wraparound the snapshot's full ids order correctly against a widened id,
        // where a 32-bit comparison would not.
        let snap = format!("{}:{}:", e3 | 10, e3 | 20);
        assert_eq!(xid_after_snapshot(widen_xid(25, snapshot_xmax(&snap)), &snap), Some(true));
        assert_eq!(xid_after_snapshot(widen_xid(15, snapshot_xmax(&snap)), &snap), Some(false));
    }

    #[test]
    fn snapshots_order_transactions() {
        assert_eq!(xid_after_snapshot(800, "700:790:"), Some(true));
        assert_eq!(xid_after_snapshot(750, "700:790:750,760"), Some(true));
        assert_eq!(xid_after_snapshot(751, "700:790:750,760"), Some(false));
        assert_eq!(xid_after_snapshot(5, "700:790:"), Some(false));
        assert_eq!(xid_after_snapshot(5, "garbage"), None);
    }
}
