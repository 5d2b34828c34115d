//! What to do next, added to an error where it is shown: the library's errors say what is wrong
//! in its own terms and never name a command-line flag; the hint names the flag.

use pgvault_core::restore::{RestoreError, TargetError};
use pgvault_core::timeline::ChoiceError;

fn choice_error(e: &anyhow::Error) -> Option<&ChoiceError> {
    e.chain().find_map(|c| match c.downcast_ref::<RestoreError>() {
        Some(RestoreError::Target(TargetError::Choice(ce))) => Some(ce),
        _ => c.downcast_ref::<TargetError>().and_then(|t| match t {
            TargetError::Choice(ce) => Some(ce),
            _ => None,
        }),
    })
}

/// A one-line hint for errors whose way out is a different command line.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    let ce = choice_error(e)?;
    Some(match ce {
        ChoiceError::GapAfterBackup { reachable_lsn, .. } | ChoiceError::GapBeforeTarget { reachable_lsn, .. } => format!(
            "to recover up to the gap, restore with --target-lsn {reachable_lsn} (or a --target-time before the last commit shown); to get past it, find the missing segment (another repository: `pgvault copy`, the server's pg_wal) or use a backup taken after the gap (`pgvault list`)"
        ),
        ChoiceError::BeyondEnd { end_lsn, .. } => {
            format!("WAL after {end_lsn} has not been archived (check archive_command and `pgvault list`); choose an earlier target")
        }
        ChoiceError::NotOnPath { .. } | ChoiceError::NoBackupOnPath { .. } => {
            "choose the timeline with --target-timeline (`pgvault list` shows each timeline's backups and windows), or omit --backup".into()
        }
        ChoiceError::BackupAfterTarget { .. } | ChoiceError::TargetBeforeOldest { .. } | ChoiceError::XidTooOld { .. } => {
            "omit --backup to let pgvault pick an older backup, or choose a later target (`pgvault list` shows the recoverable windows)".into()
        }
        ChoiceError::NotConsistent { .. } => "this backup's WAL is incomplete; restore an older or newer backup with --backup (see `pgvault list`)".into(),
        _ => return None,
    })
}
