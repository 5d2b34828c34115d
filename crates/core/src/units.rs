//! Durations and sizes in PostgreSQL's units, parsed and shown in one place.
//!
//! Operators write `recovery_window = "30d"` or `512MB` the way they write `postgresql.conf`;
//! the configuration, the command-line flags and every report (retention, later drills, tuning,
//! alerts) must read and print them identically, so this module is the only parser and
//! formatter. The units are PostgreSQL's (case-sensitive): durations `ms`, `s`, `min`, `h`, `d`;
//! sizes `B`, `kB`, `MB`, `GB`, `TB` with 1 kB = 1024 B (as in PostgreSQL, 1 GB = 1024 MB).
//! A number needs its unit: a bare `30` is refused rather than guessed.

use std::time::Duration;

/// Why a duration or size could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("'{0}' is empty; give a number and a unit, e.g. {1}")]
    Empty(String, &'static str),
    #[error("'{input}' has no unit; give one of {units} (e.g. {example})")]
    MissingUnit {
        input: String,
        units: &'static str,
        example: &'static str,
    },
    #[error("'{input}': unit '{unit}' is not one of {units} (units are case-sensitive, as in PostgreSQL)")]
    BadUnit {
        input: String,
        unit: String,
        units: &'static str,
    },
    #[error("'{0}' does not start with a whole non-negative number")]
    BadNumber(String),
    #[error("'{0}' is too large")]
    Overflow(String),
}

const DURATION_UNITS: &str = "ms, s, min, h, d";
const SIZE_UNITS: &str = "B, kB, MB, GB, TB";

/// Splits `"30 d"` into `(30, "d")`.
fn split<'a>(input: &'a str, units: &'static str, example: &'static str) -> Result<(u64, &'a str), UnitError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(UnitError::Empty(input.to_string(), example));
    }
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return Err(UnitError::BadNumber(input.to_string()));
    }
    let n: u64 = s[..digits]
        .parse()
        .map_err(|_| UnitError::Overflow(input.to_string()))?;
    let unit = s[digits..].trim();
    if unit.is_empty() {
        return Err(UnitError::MissingUnit {
            input: input.to_string(),
            units,
            example,
        });
    }
    Ok((n, unit))
}

/// Parses a duration such as `30d`, `36h`, `5min`, `90s`, `250ms`.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let (n, unit) = split(input, DURATION_UNITS, "30d")?;
    let ms_per: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(UnitError::BadUnit {
                input: input.to_string(),
                unit: other.to_string(),
                units: DURATION_UNITS,
            })
        }
    };
    let ms = n
        .checked_mul(ms_per)
        .ok_or_else(|| UnitError::Overflow(input.to_string()))?;
    Ok(Duration::from_millis(ms))
}

/// Parses a size such as `512MB`, `1GB`, `64kB`, `100B`; returns bytes.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let (n, unit) = split(input, SIZE_UNITS, "512MB")?;
    let shift = match unit {
        "B" => 0,
        "kB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        other => {
            return Err(UnitError::BadUnit {
                input: input.to_string(),
                unit: other.to_string(),
                units: SIZE_UNITS,
            })
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| UnitError::Overflow(input.to_string()))
}

/// Shows a duration exactly, in the largest unit that divides it (`30d`, `36h`, `90s`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (per, unit) in [(86_400_000u128, "d"), (3_600_000, "h"), (60_000, "min"), (1000, "s")] {
        if ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// Shows a signed span of time roughly, for humans (`3d 4h`, `15min`, `-2h`).
pub fn format_duration_rough(d: chrono::Duration) -> String {
    let neg = d < chrono::Duration::zero();
    let secs = d.num_seconds().unsigned_abs();
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let s = match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}min"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}min"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// Shows a size exactly in the largest unit that divides it (`512MB`, `1GB`, `100B`).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TB"), (30, "GB"), (20, "MB"), (10, "kB")] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// Shows a size roughly, one decimal, for reports (`1.5GB`, `300.0MB`, `12B`).
pub fn format_size_rough(bytes: u64) -> String {
    for (shift, unit) in [(40, "TB"), (30, "GB"), (20, "MB"), (10, "kB")] {
        if bytes >= 1u64 << shift {
            return format!("{:.1}{unit}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_postgres_units() {
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse_duration("36h").unwrap(), Duration::from_secs(36 * 3600));
        assert_eq!(parse_duration(" 5 min ").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(matches!(parse_duration("30"), Err(UnitError::MissingUnit { .. })));
        assert!(matches!(parse_duration("30D"), Err(UnitError::BadUnit { .. })));
        assert!(matches!(parse_duration("30days"), Err(UnitError::BadUnit { .. })));
        assert!(matches!(parse_duration("-1d"), Err(UnitError::BadNumber(_))));
        assert!(matches!(parse_duration("1.5h"), Err(UnitError::BadUnit { .. })));
        assert!(matches!(parse_duration(""), Err(UnitError::Empty(..))));
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(UnitError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("999999999999999999d"),
            Err(UnitError::Overflow(_))
        ));
    }

    #[test]
    fn sizes_use_1024() {
        assert_eq!(parse_size("1GB").unwrap(), 1024 * 1024 * 1024);
        assert_eq!(parse_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_size("64kB").unwrap(), 64 << 10);
        assert_eq!(parse_size("100B").unwrap(), 100);
        assert_eq!(parse_size("2TB").unwrap(), 2 << 40);
        assert!(matches!(parse_size("1gb"), Err(UnitError::BadUnit { .. })));
        assert!(matches!(parse_size("1KB"), Err(UnitError::BadUnit { .. })));
        assert!(matches!(parse_size("12"), Err(UnitError::MissingUnit { .. })));
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["30d", "36h", "5min", "90s", "250ms", "0s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        for s in ["1GB", "512MB", "64kB", "100B", "2TB", "1536MB"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
        assert_eq!(format_duration(Duration::from_secs(86400 * 7)), "7d");
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size_rough(1536 << 20), "1.5GB");
        assert_eq!(format_duration_rough(chrono::Duration::hours(76)), "3d 4h");
        assert_eq!(format_duration_rough(chrono::Duration::minutes(-120)), "-2h");
    }
}
