//! The archive model: timelines, contiguous WAL, gaps and recoverable windows, as PostgreSQL's
//! recovery will see them.
//!
//! Restore, `list`, `copy`, `backup` (its wait for WAL) and the retention, verification and
//! drill jobs all need the same answers: which segments recovery from a given backup reads along
//! a given timeline, where the archive has holes, and which points in time and WAL can really be
//! recovered to. Answering them in several places, differently, is how a restore ended up
//! promoting at a gap or on the wrong branch; this module is the one implementation. It is pure
//! logic: callers read the repository (history files, segment names, catalogs, the times push
//! recorded per segment) and hand the results in.
//!
//! - [`history`]: `.history` parsing (`readTimeLineHistory`) and the [`TimelineTree`].
//! - [`model`]: [`ArchiveModel`]: the file read for each segment (`XLogFileReadAnyTLI`), the
//!   [`RecoveryPlan`] of a backup, and restore points.
//! - [`windows`]: [`Gap`]s per timeline and the recoverable [`Window`]s.
//! - [`choose`]: the backup for a [`ModelTarget`], and the refusals when a gap or the archive's
//!   end makes it unreachable.

pub mod choose;
pub mod history;
pub mod model;
pub mod windows;

pub use choose::{Choice, ChoiceError, ModelTarget, TimelineSpec, XidAfterBackup};
pub use history::{parse_history, HistoryEntry, TimelineError, TimelineSpan, TimelineTree, MAX_HISTORY_BYTES};
pub use model::{
    ArchiveModel, BackupPoint, DeclaredGap, FoundRestorePoint, ModelError, RecoveryPlan, RestorePoint, SegmentTimes,
};
pub use windows::{Gap, TimelineWindows, Window};

#[cfg(test)]
mod tests;
