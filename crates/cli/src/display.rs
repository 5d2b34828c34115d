//! How command output is written: sizes, durations and rates for people in PostgreSQL's units
//! (by [`pgvault_core::units`], the one formatter), and `--json` documents for programs (one
//! helper, so every command prints JSON the same way: sizes in bytes, durations in seconds,
//! times in RFC 3339; shapes in docs/COMMANDS.md).

use std::time::Duration;

use serde::Serialize;

/// A size for people, one decimal: `512B`, `1.5kB`, `3.0GB` (1 GB = 1024 MB, as in PostgreSQL).
pub use pgvault_core::units::format_size_rough as bytes;

/// A duration for people: `0.4s`, `34.2s` under a minute, then `2min`, `1h 5min`, `2d 3h`.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1000);
        pgvault_core::units::format_duration_rough(chrono::Duration::seconds(whole))
    }
}

/// The average throughput of `bytes` done in `elapsed`: `36.0MB/s`, `-` when too quick to tell.
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "-".into();
    }
    crate::progress::format_rate(bytes as f64 / secs)
}

/// A duration as JSON shows it: seconds, with millisecond precision.
pub fn json_seconds(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// Prints a `--json` document on stdout (pretty, one document per command run).
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), for `-v` output.
pub fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.div_ceil(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_postgres_units() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5kB");
        assert_eq!(bytes(1288 << 20), "1.3GB");
        assert_eq!(bytes(3 << 30), "3.0GB");
    }

    #[test]
    fn durations() {
        assert_eq!(seconds(Duration::from_millis(400)), "0.4s");
        assert_eq!(seconds(Duration::from_millis(34_240)), "34.2s");
        assert_eq!(seconds(Duration::from_secs(125)), "2min");
        assert_eq!(seconds(Duration::from_secs(3900)), "1h 5min");
        assert_eq!(seconds(Duration::from_secs(2 * 86_400 + 3 * 3600)), "2d 3h");
    }

    #[test]
    fn average_rates() {
        assert_eq!(rate(36 << 20, Duration::from_secs(1)), "36.0MB/s");
        assert_eq!(rate(1224 << 20, Duration::from_secs(34)), "36.0MB/s");
        assert_eq!(rate(100, Duration::ZERO), "-");
    }

    #[test]
    fn json_durations_are_seconds() {
        assert_eq!(json_seconds(Duration::from_millis(34_250)), 34.25);
        assert_eq!(json_seconds(Duration::ZERO), 0.0);
    }
}
