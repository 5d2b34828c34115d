//! Point-in-time recovery end to end, on every supported PostgreSQL version: rows committed at
//! T1 < T2 < T3 with WAL switches between them, a backup taken before T1, and restores to a point
//! between T2 and T3 by time, LSN, transaction id and restore point; `--target-immediate`; a
//! tablespace; `pg_verifybackup` and `pg_amcheck` on the result; and a second restore along the
//! new timeline of a restored-and-promoted cluster that keeps archiving into the same repository.

mod common;

use pgvault_tests::{per_pg_version, PgInstall, Vault};

per_pg_version!(point_in_time_recovery, pitr);

async fn pitr(install: PgInstall) {
    let run = async { common::pitr_scenario(install, Vault::new()?).await };
    run.await.unwrap_or_else(|e: anyhow::Error| panic!("{e:#}"));
}
