//! Failpoints for kill -9 tests of commands outside restore (TEST-ONLY; inert unless
//! `PGVAULT_FAILPOINT` is set).
//!
//! Same mechanism and variable as [`crate::restore::failpoint`]: `PGVAULT_FAILPOINT` holds
//! comma-separated entries; at a matching point the process sends itself SIGKILL (no
//! destructors, no flushing, as a real `kill -9` or power loss would). Entries are
//! `<command>:<name>` (e.g. `expire:after-horizon`) or `<command>:<name>=N`, hit on the N-th
//! call of [`hit_nth`] (e.g. `expire:after-wal=3` after the third WAL object was deleted).
//!
//! Nothing here is meant for production use.

const VAR: &str = "PGVAULT_FAILPOINT";

fn entries() -> Vec<String> {
    std::env::var(VAR)
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
}

fn die(why: &str) {
    tracing::warn!("{VAR}: killing this process at {why} (test-only failpoint)");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

/// SIGKILLs this process if `<point>` (e.g. `expire:after-horizon`) is set.
pub fn hit(point: &str) {
    if entries().iter().any(|e| e == point) {
        die(point);
    }
}

/// SIGKILLs this process if `<point>=N` is set and `count == N`.
pub fn hit_nth(point: &str, count: usize) {
    let want = format!("{point}={count}");
    if entries().contains(&want) {
        die(&want);
    }
}
