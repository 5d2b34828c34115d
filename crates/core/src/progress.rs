//! Progress reporting for long operations, independent of how it is shown.
//!
//! The library reports bytes done; the CLI decides whether that becomes an indicatif bar (on a
//! terminal) or nothing at all (under cron, where output means mail). [`format_bytes`] is how
//! every size is written for people, by the library's messages and the CLI alike.

/// Receives progress of a long operation. Implementations must be cheap: this is called per
/// network message.
pub trait Progress: Send + Sync {
    /// Total bytes expected, when known.
    fn total(&self, _bytes: u64) {}
    /// Absolute position in bytes.
    fn position(&self, _bytes: u64) {}
    /// Bytes done since the last call.
    fn advance(&self, _bytes: u64) {}
    /// A short phase description ("waiting for WAL archiving").
    fn phase(&self, _text: &str) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {}

/// A size for people, in binary units with one decimal: `512 B`, `1.5 KiB`, `3.0 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::format_bytes(512), "512 B");
        assert_eq!(super::format_bytes(1536), "1.5 KiB");
        assert_eq!(super::format_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
