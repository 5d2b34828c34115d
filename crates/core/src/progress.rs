//! Progress reporting for long operations, independent of how it is shown.
//!
//! The library reports bytes done; the CLI decides whether that becomes an indicatif bar (on a
//! terminal, with throughput and time left) or nothing at all (under cron, where output means
//! mail). Sizes for people are written by [`crate::units`] only; [`format_bytes`] is its rough
//! form under the name the library's messages already use.

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

/// A size for people in PostgreSQL's units, one decimal: `512B`, `1.5kB`, `3.0GB`
/// ([`crate::units::format_size_rough`]).
pub fn format_bytes(n: u64) -> String {
    crate::units::format_size_rough(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::format_bytes(512), "512B");
        assert_eq!(super::format_bytes(1536), "1.5kB");
        assert_eq!(super::format_bytes(3 * 1024 * 1024 * 1024), "3.0GB");
    }
}
