//! The retention lifecycle: `expire` (what policy allows, never what PITR needs), `delete ID`,
//! pins, and the one repository lock every command that adds or removes backups shares.
//!
//! Repositories grow without bound unless something expires them, and expiring is where backup
//! tools lose their users' WAL: a segment deleted that a kept backup still needs turns that
//! backup into garbage nobody notices until the incident. So the decision is a pure planner
//! ([`plan`], [`walkeep`]) that property tests check against the archive model (every promised
//! point stays restorable), and the execution ([`execute`]) is ordered so that a kill at any
//! instant leaves a repository that is consistent and that a re-run finishes:
//! lock, plan again, record the WAL horizon, delete backups catalog-first, then WAL, then old
//! orphans.
//!
//! See docs/RETENTION.md.

pub mod execute;
pub mod plan;
pub mod policy;
pub mod walkeep;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod prop_tests;

use std::time::Duration;

pub use execute::{delete, expire, gather, pin, unpin, Gathered, Outcome, RetentionError};
pub use plan::{
    plan_delete, plan_expire, DeletedBackup, ExpirePlan, KeepReason, KeptBackup, OrphanDir, PlanError, PlanInput,
    PlannedOrphan,
};
pub use policy::{Policy, PolicyError, PolicyOverrides};
pub use walkeep::WalRange;

/// The one repository lock (`locks/repository`) held by every command that adds or removes
/// backups or deletes objects: `backup`, `expire`, `delete`, `pin`/`unpin`, and `copy` on its
/// target. Archive push takes no lock (see docs/FORMAT.md, "Locks").
pub const REPOSITORY_LOCK: &str = "repository";

/// The lease of [`REPOSITORY_LOCK`] (renewed every third of it while the command runs).
pub const LOCK_LEASE: Duration = Duration::from_secs(300);
