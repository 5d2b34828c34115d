//! Backup history files (`<segment>.<offset>.backup`), which PostgreSQL archives at the end of
//! every base backup.
//!
//! They carry the backup's WAL range, timelines and the server's own start and stop times, which
//! is what restore needs to pick a backup that ends before a `--target-time` (the pgvault host's
//! clock is not the server's). The archive accepts them from `archive_command`, so their content
//! is checked here: bounded size, every required line present once, and a start location that
//! matches the file name.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::{WalError, WalFileName, WalKind};
use crate::lsn::{Lsn, TimelineId};

/// Larger than any file PostgreSQL writes (the label is at most 1 KiB).
pub const MAX_BACKUP_FILE_LEN: usize = 64 * 1024;

/// A time as the server printed it; `utc` is `None` when the zone abbreviation is not one pgvault
/// can resolve (PostgreSQL prints `log_timezone`'s abbreviation, e.g. `CET`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServerTime {
    pub raw: String,
    pub utc: Option<DateTime<Utc>>,
}

/// The content of a backup history file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupFileInfo {
    pub start_lsn: Lsn,
    /// The segment named on the `START WAL LOCATION` line.
    pub start_file: WalFileName,
    pub stop_lsn: Lsn,
    pub stop_file: WalFileName,
    pub checkpoint_lsn: Lsn,
    /// `BACKUP METHOD` (`streamed`), if present.
    pub method: Option<String>,
    /// `BACKUP FROM` (`primary` or `standby`), if present.
    pub from: Option<String>,
    pub start_time: ServerTime,
    pub stop_time: ServerTime,
    pub label: String,
    pub start_timeline: TimelineId,
    pub stop_timeline: TimelineId,
}

fn bad(detail: impl Into<String>) -> WalError {
    WalError::BadBackupFile { detail: detail.into() }
}

/// Parses a backup history file. Unknown lines (PostgreSQL 17's `INCREMENTAL FROM ...`) are
/// ignored; a required line missing or given twice is an error.
pub fn parse_backup_file(content: &[u8]) -> Result<BackupFileInfo, WalError> {
    if content.len() > MAX_BACKUP_FILE_LEN {
        return Err(bad(format!(
            "{} bytes, more than a backup history file can hold",
            content.len()
        )));
    }
    let text = String::from_utf8_lossy(content);
    let mut fields: [Option<&str>; 11] = [None; 11];
    const KEYS: [&str; 11] = [
        "START WAL LOCATION",
        "STOP WAL LOCATION",
        "CHECKPOINT LOCATION",
        "BACKUP METHOD",
        "BACKUP FROM",
        "START TIME",
        "STOP TIME",
        "LABEL",
        "START TIMELINE",
        "STOP TIMELINE",
        "",
    ];
    for line in text.lines() {
        let Some((key, value)) = line.split_once(": ") else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(bad(format!("unexpected line {line:?}")));
        };
        if let Some(i) = KEYS[..10].iter().position(|k| *k == key) {
            if fields[i].replace(value).is_some() {
                return Err(bad(format!("{key} is given twice")));
            }
        }
    }
    let get = |i: usize| fields[i].ok_or_else(|| bad(format!("no {} line", KEYS[i])));
    let (start_lsn, start_file) = location(get(0)?)?;
    let (stop_lsn, stop_file) = location(get(1)?)?;
    Ok(BackupFileInfo {
        start_lsn,
        start_file,
        stop_lsn,
        stop_file,
        checkpoint_lsn: lsn(get(2)?)?,
        method: fields[3].map(str::to_string),
        from: fields[4].map(str::to_string),
        start_time: server_time(get(5)?),
        stop_time: server_time(get(6)?),
        label: get(7)?.to_string(),
        start_timeline: timeline(get(8)?)?,
        stop_timeline: timeline(get(9)?)?,
    })
}

fn lsn(s: &str) -> Result<Lsn, WalError> {
    s.parse().map_err(|_| bad(format!("{s:?} is not an LSN")))
}

fn timeline(s: &str) -> Result<TimelineId, WalError> {
    match s.trim().parse::<TimelineId>() {
        Ok(t) if t > 0 => Ok(t),
        _ => Err(bad(format!("{s:?} is not a timeline id"))),
    }
}

/// `0/B00028 (file 00000001000000000000000B)`.
fn location(s: &str) -> Result<(Lsn, WalFileName), WalError> {
    let err = || bad(format!("{s:?} is not a WAL location (LSN (file SEGMENT))"));
    let (l, rest) = s.split_once(" (file ").ok_or_else(err)?;
    let file = rest.strip_suffix(')').ok_or_else(err)?;
    let file = WalFileName::parse(file).map_err(|_| err())?;
    if file.kind != WalKind::Segment {
        return Err(err());
    }
    Ok((lsn(l)?, file))
}

/// `2026-11-23 03:12:00 UTC` (`%Y-%m-%d %H:%M:%S %Z` in `log_timezone`).
fn server_time(raw: &str) -> ServerTime {
    let utc = raw.rsplit_once(' ').and_then(|(local, zone)| {
        let local = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S").ok()?;
        let offset = FixedOffset::east_opt(zone_offset(zone)?)?;
        Some(offset.from_local_datetime(&local).single()?.with_timezone(&Utc))
    });
    ServerTime {
        raw: raw.to_string(),
        utc,
    }
}

/// Seconds east of UTC for `UTC`/`GMT` and numeric abbreviations (`+03`, `-0330`, `+05:30`);
/// `None` for names (`CET`, `EST`), which are ambiguous without the zone database.
fn zone_offset(zone: &str) -> Option<i32> {
    if matches!(zone, "UTC" | "GMT" | "UCT" | "Z" | "Etc/UTC" | "Universal" | "Zulu") {
        return Some(0);
    }
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let digits: String = digits.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![2, 4, 6].contains(&digits.len()) {
        return None;
    }
    let part = |i: usize| digits.get(i..i + 2).map_or(Some(0), |p| p.parse::<i32>().ok());
    let (h, m, s) = (part(0)?, part(2)?, part(4)?);
    if h > 15 || m > 59 || s > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60 + s))
}

/// Checks that a backup history file's content matches its name `<segment>.<offset>.backup`:
/// the start location's segment and offset, and a start file consistent with the start LSN and
/// timeline.
pub fn check_backup_file(name: &WalFileName, info: &BackupFileInfo, segment_size: u64) -> Result<(), WalError> {
    let mismatch = |detail: String| {
        Err(WalError::BackupFileMismatch {
            name: name.to_string(),
            detail,
        })
    };
    let WalKind::Backup { offset } = name.kind else {
        return mismatch("not a backup history file name".into());
    };
    let start_seg = WalFileName::segment_for(info.start_timeline, info.start_lsn, segment_size);
    if start_seg != info.start_file {
        return mismatch(format!(
            "START WAL LOCATION {} on timeline {} is in {start_seg}, the file says {}",
            info.start_lsn, info.start_timeline, info.start_file
        ));
    }
    let stop_seg = WalFileName::segment_for(info.stop_timeline, info.stop_lsn, segment_size);
    if stop_seg != info.stop_file || info.stop_lsn < info.start_lsn {
        return mismatch(format!(
            "STOP WAL LOCATION {} (file {}) is inconsistent",
            info.stop_lsn, info.stop_file
        ));
    }
    let named = WalFileName {
        kind: WalKind::Segment,
        ..*name
    };
    if named != start_seg || u64::from(offset) != info.start_lsn.segment_offset(segment_size) {
        return mismatch(format!(
            "it describes a backup starting at {} ({start_seg})",
            info.start_lsn
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1024 * 1024;
    /// Written by PostgreSQL 15 (crates/core/tests/data/wal/pg15).
    const REAL: &str = include_str!("../../tests/data/wal/pg15/00000001000000000000000B.00000028.backup");

    #[test]
    fn parses_a_real_file_and_checks_its_name() {
        let info = parse_backup_file(REAL.as_bytes()).unwrap();
        assert_eq!(info.start_lsn, "0/B00028".parse().unwrap());
        assert_eq!(info.start_file.to_string(), "00000001000000000000000B");
        assert_eq!(info.stop_lsn, "0/B00100".parse().unwrap());
        assert_eq!(info.checkpoint_lsn, "0/B00060".parse().unwrap());
        assert_eq!(info.method.as_deref(), Some("streamed"));
        assert_eq!(info.from.as_deref(), Some("primary"));
        assert_eq!(info.label, "pg_basebackup base backup");
        assert_eq!((info.start_timeline, info.stop_timeline), (1, 1));
        assert_eq!(info.start_time.utc.unwrap().to_rfc3339(), "2026-12-01T21:31:29+00:00");
        let name = WalFileName::parse("00000001000000000000000B.00000028.backup").unwrap();
        check_backup_file(&name, &info, SEG).unwrap();
        for other in [
            "00000001000000000000000B.00000030.backup",
            "00000002000000000000000B.00000028.backup",
            "00000001000000000000000C.00000028.backup",
        ] {
            let n = WalFileName::parse(other).unwrap();
            assert!(
                matches!(
                    check_backup_file(&n, &info, SEG),
                    Err(WalError::BackupFileMismatch { .. })
                ),
                "{other}"
            );
        }
        let seg = WalFileName::parse("00000001000000000000000B").unwrap();
        assert!(check_backup_file(&seg, &info, SEG).is_err());
    }

    #[test]
    fn parses_a_pg18_file() {
        let text = include_str!("../../tests/data/wal/pg18/00000001000000000000000C.00000028.backup");
        let info = parse_backup_file(text.as_bytes()).unwrap();
        assert_eq!(
            (info.start_lsn, info.stop_lsn),
            ("0/C00028".parse().unwrap(), "0/C00120".parse().unwrap())
        );
        assert!(info.stop_time.utc.is_some() && info.start_time.utc <= info.stop_time.utc);
        let name = WalFileName::parse("00000001000000000000000C.00000028.backup").unwrap();
        check_backup_file(&name, &info, SEG).unwrap();
    }

    #[test]
    fn refuses_missing_repeated_and_malformed_lines() {
        let without = REAL
            .lines()
            .filter(|l| !l.starts_with("STOP WAL"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(matches!(
            parse_backup_file(without.as_bytes()),
            Err(WalError::BadBackupFile { .. })
        ));
        let twice = format!("{REAL}LABEL: again\n");
        assert!(parse_backup_file(twice.as_bytes()).is_err());
        let bad_lsn = REAL.replace("0/B00060", "0/XYZ");
        assert!(parse_backup_file(bad_lsn.as_bytes()).is_err());
        let bad_file = REAL.replace("(file 00000001000000000000000B)\nSTOP", "(file ../etc/passwd)\nSTOP");
        assert!(parse_backup_file(bad_file.as_bytes()).is_err());
        assert!(parse_backup_file(&vec![b'A'; MAX_BACKUP_FILE_LEN + 1]).is_err());
        assert!(parse_backup_file(b"garbage without a colon").is_err());
        let incremental = format!("{REAL}INCREMENTAL FROM LSN: 0/A000028\n");
        assert!(parse_backup_file(incremental.as_bytes()).is_ok());
        // A start file that does not hold the start LSN.
        let inconsistent = REAL.replace("0/B00028 (file", "0/C00028 (file");
        let info = parse_backup_file(inconsistent.as_bytes()).unwrap();
        let name = WalFileName::parse("00000001000000000000000B.00000028.backup").unwrap();
        assert!(check_backup_file(&name, &info, SEG).is_err());
    }

    #[test]
    fn server_times_with_zone_abbreviations() {
        let t = |s: &str| server_time(s).utc.map(|t| t.to_rfc3339());
        assert_eq!(
            t("2026-11-23 03:12:00 UTC").as_deref(),
            Some("2026-11-23T03:12:00+00:00")
        );
        assert_eq!(
            t("2026-11-23 03:12:00 GMT").as_deref(),
            Some("2026-11-23T03:12:00+00:00")
        );
        assert_eq!(
            t("2026-11-23 03:12:00 +03").as_deref(),
            Some("2026-11-23T00:12:00+00:00")
        );
        assert_eq!(
            t("2026-11-23 03:12:00 -0330").as_deref(),
            Some("2026-11-23T06:42:00+00:00")
        );
        assert_eq!(
            t("2026-11-23 03:12:00 +05:30").as_deref(),
            Some("2026-11-22T21:42:00+00:00")
        );
        assert_eq!(t("2026-11-23 03:12:00 CET"), None);
        assert_eq!(server_time("2026-11-23 03:12:00 CET").raw, "2026-11-23 03:12:00 CET");
        assert_eq!(t("yesterday UTC"), None);
        assert_eq!(t("2026-11-23 03:12:00 +99"), None);
    }
}
