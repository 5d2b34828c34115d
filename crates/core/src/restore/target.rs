//! Recovery targets: parsing them, choosing the backup to start from, and refusing a target that
//! lies outside what the repository can recover, before a single byte is written.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

use crate::lsn::Lsn;
use crate::repository::summary::BackupSummary;
use crate::timeline::{ArchiveModel, BackupPoint, Choice, ChoiceError, ModelTarget, TimelineSpec};

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
    #[error("'{0}' is not a timeline: use latest, current or a timeline id")]
    BadTimeline(String),
    #[error(transparent)]
    Choice(#[from] ChoiceError),
}

/// Parses a target time; a zone is required.
pub fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, TargetError> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
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
    Some(
        xip.split(',')
            .filter(|s| !s.is_empty())
            .any(|x| x.parse::<u64>().ok() == Some(xid)),
    )
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

/// `--target-timeline`: `latest` (default), `current` or a timeline id (decimal, or hex as
/// PostgreSQL prints it in file names with a `0x` prefix).
pub fn parse_timeline(spec: Option<&str>) -> Result<TimelineSpec, TargetError> {
    let Some(s) = spec.map(str::trim) else {
        return Ok(TimelineSpec::Latest);
    };
    match s {
        "" | "latest" => Ok(TimelineSpec::Latest),
        "current" => Ok(TimelineSpec::Current),
        _ => {
            let n = match s.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => s.parse::<u32>().ok(),
            };
            match n {
                Some(n) if n > 0 => Ok(TimelineSpec::Id(n)),
                _ => Err(TargetError::BadTimeline(s.to_string())),
            }
        }
    }
}

/// The model's form of `target`: times in UTC, transaction ids widened to 64 bits against the
/// newest backup's snapshot.
pub fn model_target(target: &Target, backups: &[BackupSummary]) -> ModelTarget {
    match target {
        Target::End => ModelTarget::End,
        Target::Immediate => ModelTarget::Immediate,
        Target::Lsn(l) => ModelTarget::Lsn(*l),
        Target::Time(t) => ModelTarget::Time(t.with_timezone(&Utc)),
        Target::Name(n) => ModelTarget::Name(n.clone()),
        Target::Xid(x) => {
            let reference = backups
                .iter()
                .filter_map(|b| b.snapshot_after_stop.as_deref().and_then(snapshot_xmax))
                .max();
            ModelTarget::Xid {
                full: widen_xid(*x, reference),
            }
        }
    }
}

/// Chooses the backup for `target` along `timeline` with the archive model, or refuses with
/// why: a gap before the target, a target past the archive's end, a backup on another branch.
pub fn choose(
    model: &ArchiveModel,
    catalogs: &[BackupSummary],
    explicit: Option<&str>,
    target: &Target,
    timeline: TimelineSpec,
) -> Result<Choice, TargetError> {
    let mt = model_target(target, catalogs);
    let xid_after = |b: &BackupPoint| -> Option<bool> {
        let ModelTarget::Xid { full } = mt else { return None };
        let cat = catalogs.iter().find(|c| c.id == b.id)?;
        xid_after_snapshot(full, cat.snapshot_after_stop.as_deref()?)
    };
    Ok(model.choose_backup_for(&mt, timeline, explicit, &xid_after)?)
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
        assert!(matches!(
            parse_time("2026-11-23 03:12:00"),
            Err(TargetError::BadTime(_))
        ));
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
        assert_eq!(
            xid_after_snapshot(widen_xid(25, snapshot_xmax(&snap)), &snap),
            Some(true)
        );
        assert_eq!(
            xid_after_snapshot(widen_xid(15, snapshot_xmax(&snap)), &snap),
            Some(false)
        );
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
