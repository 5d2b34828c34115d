//! Progress reporting for long operations, independent of how it is shown.
//!
//! The library reports bytes done; the CLI decides whether that becomes an indicatif bar (on a
//! terminal) or nothing at all (under cron, where output means mail).

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
