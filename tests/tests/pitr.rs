//! Point-in-time recovery end to end, on every supported PostgreSQL version: rows committed at
//! T1 < T2 < T3 with WAL switches between them, a backup taken before T1, and restores to a point
//! between T2 and T3 by time, LSN, transaction id and restore point; `--target-immediate`; a
//! tablespace; `pg_verifybackup` and `pg_amcheck` on the result; and a second restore along the
//! new timeline of a restored-and-promoted cluster that keeps archiving into the same repository.
//!
//! `tablespace_without_map`: a tablespace restored without `--tablespace-map` goes back to its
//! original path, and restore refuses while that directory still holds data. PostgreSQL 15 only:
//! what it checks is pgvault's restore, which does not depend on the server version.

mod common;

use pgvault_tests::{install_under_test, per_pg_version, PgInstall, Vault};

per_pg_version!(point_in_time_recovery, pitr);

async fn pitr(install: PgInstall) {
    let run = async { common::pitr_scenario(install, Vault::new()?).await };
    run.await.unwrap_or_else(|e: anyhow::Error| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tablespace_without_map() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    let run = async { common::tablespace_original_location(install, Vault::new()?).await };
    run.await.unwrap_or_else(|e: anyhow::Error| panic!("{e:#}"));
}
