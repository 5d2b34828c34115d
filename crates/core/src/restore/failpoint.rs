//! Failpoints for the kill -9 tests (TEST-ONLY; inert unless `PGVAULT_FAILPOINT` is set).
//!
//! Restore must leave a directory PostgreSQL refuses to start, and that a re-run can finish, when
//! it is killed at any instant. The integration tests prove it by killing `pgvault restore` at
//! chosen instants rather than after timers: `PGVAULT_FAILPOINT` holds comma-separated entries,
//! and at a matching point the process sends itself SIGKILL (no destructors, no flushing, as a
//! real `kill -9` or power loss would):
//! - `restore:<name>`: at [`hit`]`(name)`; the names are `after-marker`, `after-skeleton`,
//!   `after-files`, `after-settings`, `after-modes`, `before-pg-control`, `after-pg-control`,
//!   `during-cleanup` (on a re-run, after the interrupted restore's first file was removed);
//! - `restore:after-bytes=N`: once N bytes of file contents were written.
//!
//! Nothing here is meant for production use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::progress::Progress;

// The variable and the kill itself are shared with every command's failpoints.
use crate::failpoint::{die, entries};

/// SIGKILLs this process if `restore:<name>` is set.
pub fn hit(name: &str) {
    let want = format!("restore:{name}");
    if entries().contains(&want) {
        die(&want);
    }
}

/// The byte limit of `restore:after-bytes=N`, if set.
fn byte_limit() -> Option<u64> {
    entries()
        .iter()
        .find_map(|e| e.strip_prefix("restore:after-bytes=").and_then(|n| n.parse().ok()))
}

/// Wraps `inner` to SIGKILL the process once `restore:after-bytes=N` bytes were written; returns
/// `inner` itself without the variable.
pub fn counting(inner: Arc<dyn Progress>) -> Arc<dyn Progress> {
    match byte_limit() {
        Some(limit) => Arc::new(KillAfter {
            inner,
            limit,
            seen: AtomicU64::new(0),
        }),
        None => inner,
    }
}

struct KillAfter {
    inner: Arc<dyn Progress>,
    limit: u64,
    seen: AtomicU64,
}

impl Progress for KillAfter {
    fn total(&self, b: u64) {
        self.inner.total(b)
    }
    fn position(&self, b: u64) {
        self.inner.position(b)
    }
    fn advance(&self, b: u64) {
        self.inner.advance(b);
        if self.seen.fetch_add(b, Ordering::SeqCst) + b >= self.limit {
            die(&format!("restore:after-bytes={}", self.limit));
        }
    }
    fn phase(&self, t: &str) {
        self.inner.phase(t)
    }
    fn finish(&self) {
        self.inner.finish()
    }
}
