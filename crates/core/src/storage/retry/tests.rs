//! Retries against the in-process [`Faulty`] store: each test fails if the retry it is about
//! is removed (the fault would surface as an error, or the call count would differ).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::storage::faulty::{Fault, Faulty};
use crate::storage::{PutOutcome, Storage, StorageErrorKind, OP_RETRIES};

fn faulty() -> (Arc<Faulty>, Storage) {
    let store = Arc::new(Faulty::default());
    let storage = Storage::from_store(store.clone(), "faulty://".into(), String::new());
    (store, storage)
}

const KEY: &str = "wal/0000000100000000/000000010000000000000001";

#[tokio::test]
async fn a_create_that_timed_out_is_tried_again() {
    let (store, s) = faulty();
    store.fail_puts(&[Fault::Timeout]);
    let out = s.put_if_absent(KEY, Bytes::from_static(b"wal")).await;
    assert_eq!(out.expect("retried"), PutOutcome::Created);
    assert_eq!(store.put_calls.load(Ordering::SeqCst), 2);
    assert_eq!(s.get(KEY).await.expect("stored"), Bytes::from_static(b"wal"));
}

#[tokio::test]
async fn a_create_that_landed_before_its_answer_was_lost_is_ours() {
    let (store, s) = faulty();
    store.fail_puts(&[Fault::LandThenTimeout]);
    let out = s.put_if_absent(KEY, Bytes::from_static(b"wal")).await;
    assert_eq!(out.expect("retried"), PutOutcome::Created);
    assert_eq!(store.put_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_retried_create_meeting_other_content_reports_it_exists() {
    let (store, s) = faulty();
    s.put(KEY, Bytes::from_static(b"theirs")).await.expect("put");
    store.fail_puts(&[Fault::Timeout]);
    let out = s.put_if_absent(KEY, Bytes::from_static(b"ours")).await;
    assert_eq!(out.expect("retried"), PutOutcome::AlreadyExists);
    assert_eq!(s.get(KEY).await.expect("kept"), Bytes::from_static(b"theirs"));
}

#[tokio::test]
async fn real_failures_are_not_retried_and_retries_are_bounded() {
    let (store, s) = faulty();
    store.fail_puts(&[Fault::Denied]);
    let e = s.put_if_absent(KEY, Bytes::from_static(b"x")).await;
    assert_eq!(e.expect_err("denied").kind(), StorageErrorKind::Auth);
    assert_eq!(store.put_calls.load(Ordering::SeqCst), 1);

    let (store, s) = faulty();
    store.fail_puts(&vec![Fault::Timeout; OP_RETRIES as usize + 1]);
    let e = s.put_if_absent(KEY, Bytes::from_static(b"x")).await;
    assert_eq!(e.expect_err("gave up").kind(), StorageErrorKind::Transient);
    assert_eq!(store.put_calls.load(Ordering::SeqCst), OP_RETRIES + 1);
}

#[tokio::test]
async fn a_plain_put_that_timed_out_is_tried_again() {
    let (store, s) = faulty();
    store.fail_puts(&[Fault::Timeout, Fault::LandThenTimeout]);
    s.put(KEY, Bytes::from_static(b"v")).await.expect("retried");
    assert_eq!(store.put_calls.load(Ordering::SeqCst), 3);
    assert_eq!(s.get(KEY).await.expect("stored"), Bytes::from_static(b"v"));
}

#[tokio::test]
async fn whole_reads_survive_cut_off_bodies_and_failed_requests() {
    let (store, s) = faulty();
    let data = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>());
    s.put(KEY, data.clone()).await.expect("put");
    store.fail_gets(&[Fault::CutOff, Fault::Timeout, Fault::CutOff]);
    assert_eq!(s.get(KEY).await.expect("read"), data);
    assert_eq!(store.get_calls.load(Ordering::SeqCst), 4);
    // get_opt is what WAL fetch, catalogs and manifests use.
    store.fail_gets(&[Fault::Timeout, Fault::CutOff]);
    assert_eq!(s.get_opt(KEY).await.expect("read"), Some(data.clone()));
    store.fail_gets(&[Fault::CutOff, Fault::Timeout]);
    assert_eq!(s.get_prefix(KEY, 100).await.expect("read"), data.slice(..100));
}

#[tokio::test]
async fn missing_and_refused_reads_are_not_retried() {
    let (store, s) = faulty();
    assert_eq!(s.get_opt(KEY).await.expect("missing is fine"), None);
    assert_eq!(store.get_calls.load(Ordering::SeqCst), 1);
    s.put(KEY, Bytes::from_static(b"v")).await.expect("put");
    store.fail_gets(&[Fault::Denied]);
    let e = s.get(KEY).await.expect_err("denied");
    assert_eq!(e.kind(), StorageErrorKind::Auth);
    assert_eq!(store.get_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_streamed_read_whose_request_failed_is_tried_again() {
    use futures::stream::TryStreamExt;
    let (store, s) = faulty();
    s.put(KEY, Bytes::from_static(b"bundle")).await.expect("put");
    store.fail_gets(&[Fault::Timeout]);
    let parts: Vec<Bytes> = s
        .get_stream(KEY)
        .await
        .expect("retried")
        .try_collect()
        .await
        .expect("read");
    assert_eq!(parts.concat(), b"bundle".to_vec());
    assert_eq!(store.get_calls.load(Ordering::SeqCst), 2);
}
