//! The storage seam on each cloud backend, against real emulators on loopback: the
//! conditional-create probe (and the check-then-write fallback), streamed multipart uploads
//! across several parts (and that an aborted one leaves nothing under its name), listing under a
//! prefix, and error messages that name the store, bucket, key and HTTP status.

use bytes::Bytes;
use pgvault_core::storage::{CreateMode, PutOutcome, Storage, UPLOAD_PART_SIZE};
use pgvault_tests::{ObjStore, StoreKind};

/// What each emulator does with conditional create (S3/Azure `If-None-Match: *`, GCS
/// `x-goog-if-generation-match: 0`): SeaweedFS, fake-gcs-server (through the test's XML upload
/// adapter, which hands the precondition to fake-gcs's own upload) and Azurite all honour it.
fn expected_mode(_kind: StoreKind) -> CreateMode {
    CreateMode::Conditional
}

async fn seam(kind: StoreKind) {
    if !kind.available() {
        return;
    }
    let store = ObjStore::start(kind).await.unwrap_or_else(|e| panic!("{e:#}"));
    let s = store.storage("seam").unwrap();

    // The probe, as `init` runs it.
    let mode = s
        .probe_create_mode()
        .await
        .unwrap_or_else(|e| panic!("{} probe: {e}", kind.name()));
    eprintln!("{}: conditional create probe -> {}", kind.name(), mode.name());
    assert_eq!(mode, expected_mode(kind), "{}: probe result", kind.name());
    assert!(
        s.list("")
            .await
            .unwrap()
            .iter()
            .all(|o| !o.key.starts_with("pgvault.probe")),
        "the probe object is deleted"
    );

    // Conditional create and the fallback.
    s.put("write-check", Bytes::from_static(b"ok"))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
    let modes = if mode == CreateMode::Conditional {
        vec![CreateMode::Conditional, CreateMode::CheckThenWrite]
    } else {
        // Show why (fake-gcs-server answers 400 to a conditional create).
        let mut raw = s.clone();
        raw.set_create_mode(CreateMode::Conditional);
        let first = raw.put_if_absent("ignored", Bytes::from_static(b"1")).await;
        let second = raw.put_if_absent("ignored", Bytes::from_static(b"2")).await;
        eprintln!("{}: conditional create -> {first:?}, then {second:?}", kind.name());
        raw.delete("ignored").await.unwrap();
        vec![CreateMode::CheckThenWrite]
    };
    for m in modes {
        let mut s: Storage = s.clone();
        s.set_create_mode(m);
        let key = format!("wal/x/{}", m.name());
        assert_eq!(
            s.put_if_absent(&key, Bytes::from_static(b"first")).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            s.put_if_absent(&key, Bytes::from_static(b"second")).await.unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(
            s.get(&key).await.unwrap(),
            Bytes::from_static(b"first"),
            "{}: never overwritten",
            m.name()
        );
    }

    // A streamed upload of 2.5 parts, and listing under the prefix.
    let part = UPLOAD_PART_SIZE;
    let total = part * 5 / 2;
    let mut up = s.upload("backups/b1/bundles/000000").await.unwrap();
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut written = 0;
    while written < total {
        up.write(&block).await.unwrap();
        written += block.len();
    }
    up.finish()
        .await
        .unwrap_or_else(|e| panic!("{}: multipart upload: {e}", kind.name()));
    let got = s.get("backups/b1/bundles/000000").await.unwrap();
    assert_eq!(got.len(), written);
    assert!(
        got.chunks(block.len()).all(|c| c == &block[..c.len()]),
        "content round-trips"
    );

    // An aborted upload leaves no object under its name.
    let mut up = s.upload("backups/b1/bundles/000001").await.unwrap();
    up.write(&block).await.unwrap();
    up.abort().await;
    assert!(
        s.head("backups/b1/bundles/000001").await.unwrap().is_none(),
        "aborted upload left an object"
    );

    let mut keys: Vec<String> = s.list("backups").await.unwrap().into_iter().map(|o| o.key).collect();
    keys.sort();
    assert_eq!(keys, ["backups/b1/bundles/000000"]);
    assert_eq!(s.list_dirs("backups").await.unwrap(), ["b1"]);
    assert!(s.get_opt("wal/none").await.unwrap().is_none(), "missing object is None");
    s.delete("backups/b1/bundles/000000").await.unwrap();
    s.delete("backups/b1/bundles/000000").await.unwrap();

    // Errors name the store, bucket, object, status and what to check.
    let mut bad = store.repository_config("seam");
    match kind {
        StoreKind::S3PrivateCa | StoreKind::S3SelfSigned => bad.secret_access_key = Some("wrong".into()),
        StoreKind::Azure => bad.access_key = Some("d3Jvbmcga2V5IGZvciB0ZXN0aW5nIG9ubHk=".into()),
        StoreKind::Gcs => bad.url = "gs://no-such-bucket/seam".into(),
    }
    bad.retry_max = 1;
    let bad = Storage::open(&bad, false).unwrap();
    let err = bad.get("wal/x/conditional-create").await.unwrap_err().to_string();
    eprintln!("{}: {err}", kind.name());
    if kind == StoreKind::Gcs {
        // A missing bucket is named as such on a write (what `init` does first), not reported
        // as a missing object.
        let werr = bad
            .put("pgvault.repo", Bytes::from_static(b"x"))
            .await
            .unwrap_err()
            .to_string();
        eprintln!("{}: {werr}", kind.name());
        assert!(
            werr.contains("no-such-bucket") && werr.contains("does not exist") && werr.contains("HTTP status 404"),
            "{werr}"
        );
    }
    assert!(err.contains("wal/x/conditional-create"), "{}: {err}", kind.name());
    if kind != StoreKind::Gcs {
        // (On GCS a read from a missing bucket is a plain 404, indistinguishable from a missing
        // object; the write above is where the bucket gets named.)
        assert!(err.contains("HTTP status"), "{}: {err}", kind.name());
        assert!(err.contains("check"), "says what to check: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_private_ca() {
    seam(StoreKind::S3PrivateCa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_self_signed() {
    seam(StoreKind::S3SelfSigned).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs() {
    seam(StoreKind::Gcs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure() {
    seam(StoreKind::Azure).await;
}

/// Without `ca_file`, the private-CA endpoint is refused with a message that points at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_untrusted_certificate_is_explained() {
    if !StoreKind::S3PrivateCa.available() {
        return;
    }
    let store = ObjStore::start(StoreKind::S3PrivateCa)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut cfg = store.repository_config("untrusted");
    cfg.ca_file = None;
    cfg.retry_max = 0;
    let err = Storage::open(&cfg, false)
        .unwrap()
        .get("pgvault.repo")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ca_file"), "the message points at ca_file: {err}");
}
