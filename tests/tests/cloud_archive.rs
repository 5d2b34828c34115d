//! The `archive_command` / `restore_command` contract on each object store, checked through the
//! store's own API (pgvault-core's storage seam, no pgvault format involved): an identical
//! re-push succeeds and rewrites nothing, different content under an archived name fails and
//! leaves the object unchanged, a missing file on fetch is a quiet exit 1 and a corrupted object
//! a loud exit 126. Each store runs with the conditional-create mode its `init` probe found
//! (shown by `pgvault info`), and once with the check-then-write fallback forced
//! (`[repository] conditional_create = false`). Fetches are compared byte for byte with what
//! PostgreSQL handed `archive_command`. (The fallback chosen by the probe itself, on a store that
//! answers `501` to conditional writes, is in `faults.rs`.)

use anyhow::{Context, Result};
use bytes::Bytes;
use pgvault_tests::{
    archiving_cluster, install_under_test, wal_key, write_postgres_file, ClusterOptions, ObjStore, StoreKind, Vault,
};

async fn contract(kind: StoreKind, force_fallback: bool) {
    let Some(install) = install_under_test(15) else {
        return;
    };
    let Some(store) = ObjStore::for_test(kind).await else {
        return;
    };
    inner(&install, &store, force_fallback)
        .await
        .unwrap_or_else(|e| panic!("{}: {e:#}\nstore log tail:\n{}", kind.name(), store.log_tail()));
}

async fn inner(install: &pgvault_tests::PgInstall, store: &ObjStore, force_fallback: bool) -> Result<()> {
    let mut vault = Vault::with_store(store)?;
    vault.keep_archived_copies()?;
    if force_fallback {
        vault.repository_extra = "conditional_create = false\n".into();
    }
    let cluster = archiving_cluster(install, &vault, ClusterOptions::default()).await?;

    // `init` probed the store once; `info` says which mode WAL push uses.
    let info = vault.pgvault(["info", "--json"])?.check()?;
    let info: serde_json::Value = serde_json::from_str(&info.stdout).context("info --json")?;
    let expected = if force_fallback {
        "check-then-write"
    } else {
        "conditional-create"
    };
    assert_eq!(info["wal_push_mode"], expected, "{}: info: {info}", store.kind.name());
    let text = vault.pgvault(["info"])?.check()?;
    assert!(text.stdout.contains(expected), "info shows the mode: {text}");

    let raw = store.storage(vault.store_prefix().context("cloud vault")?)?;
    let seg = cluster.archive_fresh_segment().await?;
    let key = wal_key(&seg)?;
    let stored = raw
        .get(&key)
        .await
        .with_context(|| format!("{seg} is archived under {key}"))?;

    let original = vault.archived_copy(&seg)?;
    assert_eq!(original.len(), 16 * 1024 * 1024, "a whole segment was archived");
    let work = vault.dir.subdir("work")?;
    let fetched = work.join("fetched");
    vault
        .archive(["fetch", &seg, &fetched.display().to_string()])?
        .check()?;
    assert!(
        std::fs::read(&fetched)? == original,
        "{}: fetch returns the bytes PostgreSQL archived",
        store.kind.name()
    );

    // Same content again: success, nothing rewritten.
    vault.check_duplicate_pushes(&seg, &original, &work).await?;
    let again = work.join(&seg);

    // Missing on fetch: quiet exit 1.
    for missing in ["0000000100000000000000FE", "00000009.history"] {
        let out = vault.archive(["fetch", missing, &work.join("missing").display().to_string()])?;
        assert_eq!(out.code(), Some(1), "missing {missing}: {out}");
        assert!(out.stderr.trim().is_empty(), "missing files are quiet: {out}");
        assert!(!work.join("missing").exists());
    }

    // A flipped byte in the stored object: loud, recovery-stopping exit 126.
    let mut flipped = stored.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    raw.put(&key, Bytes::from(flipped)).await?;
    let out = vault.archive(["fetch", &seg, &work.join("flipped").display().to_string()])?;
    assert_eq!(out.code(), Some(126), "corrupted object: {out}");
    assert!(out.stderr.contains("corrupt"), "the message says corrupted: {out}");
    assert!(!work.join("flipped").exists(), "nothing half-written on failure");

    // The next push of the real file repairs it.
    write_postgres_file(&again, &original, 0o600)?;
    let out = vault.archive(["push", &again.display().to_string()])?;
    assert_eq!(out.code(), Some(0), "push over an unreadable object repairs it: {out}");
    let repaired = work.join("repaired");
    vault
        .archive(["fetch", &seg, &repaired.display().to_string()])?
        .check()?;
    assert!(
        std::fs::read(&repaired)? == original,
        "the repaired object holds the bytes PostgreSQL archived"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_self_signed_cert() {
    contract(StoreKind::S3SelfSigned, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_check_then_write_fallback() {
    contract(StoreKind::S3PrivateCa, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs() {
    contract(StoreKind::Gcs, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure() {
    contract(StoreKind::Azure, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_check_then_write_fallback() {
    contract(StoreKind::Azure, true).await;
}
