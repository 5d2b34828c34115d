//! The point-in-time-recovery scenario of `pitr.rs` (shared in `common/`), on PostgreSQL 15,
//! with the repository on each object store: S3 over TLS with a private CA (SeaweedFS), GCS
//! (fake-gcs-server) and Azure Blob (Azurite). Every command — init, backup, archive push and
//! fetch, list, restore — runs against the store through the real binaries.

mod common;

use pgvault_tests::{install_under_test, ObjStore, StoreKind, Vault};

async fn pitr_on(kind: StoreKind) {
    let Some(install) = install_under_test(15) else {
        return;
    };
    let Some(store) = ObjStore::for_test(kind).await else {
        return;
    };
    let run = async { common::pitr_scenario(install, Vault::with_store(&store)?).await };
    run.await
        .unwrap_or_else(|e: anyhow::Error| panic!("{}: {e:#}\nstore log tail:\n{}", kind.name(), store.log_tail()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_private_ca() {
    pitr_on(StoreKind::S3PrivateCa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs() {
    pitr_on(StoreKind::Gcs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure() {
    pitr_on(StoreKind::Azure).await;
}
