//! Unit tests of the storage seam on the in-memory store, and of how a store's answers to a
//! conditional create are read (a store that says "precondition failed" instead of "exists").

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult,
};

use super::*;

#[tokio::test]
async fn put_get_list_delete() {
    let s = Storage::memory();
    assert!(!s.is_local());
    s.put("wal/a/1", Bytes::from_static(b"one")).await.unwrap();
    s.put("wal/a/2", Bytes::from_static(b"two")).await.unwrap();
    s.put("backups/x/catalog", Bytes::from_static(b"cat")).await.unwrap();
    assert_eq!(&s.get("wal/a/1").await.unwrap()[..], b"one");
    s.put("wal/a/1", Bytes::from_static(b"uno")).await.unwrap();
    assert_eq!(&s.get("wal/a/1").await.unwrap()[..], b"uno", "put replaces");
    let mut keys: Vec<_> = s.list("wal").await.unwrap().into_iter().map(|o| o.key).collect();
    keys.sort();
    assert_eq!(keys, ["wal/a/1", "wal/a/2"]);
    assert_eq!(s.list_dirs("backups").await.unwrap(), ["x"]);
    assert_eq!(s.head("wal/a/2").await.unwrap().map(|o| o.size), Some(3));
    s.delete("wal/a/2").await.unwrap();
    s.delete("wal/a/2").await.unwrap(); // deleting what is gone is fine
    assert!(s.head("wal/a/2").await.unwrap().is_none());
    let err = s.get("wal/a/2").await.unwrap_err();
    assert!(err.is_not_found() && err.kind() == StorageErrorKind::NotFound, "{err}");
    assert_eq!(s.get_opt("wal/a/2").await.unwrap(), None);
}

#[tokio::test]
async fn put_if_absent_never_overwrites() {
    let s = Storage::memory();
    assert_eq!(
        s.put_if_absent("k", Bytes::from_static(b"first")).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s.put_if_absent("k", Bytes::from_static(b"second")).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(&s.get("k").await.unwrap()[..], b"first");
}

#[tokio::test]
async fn streamed_read_and_upload() {
    let s = Storage::memory();
    let mut up = s.upload("big").await.unwrap();
    up.write(b"hello ").await.unwrap();
    up.write(b"world").await.unwrap();
    assert_eq!(up.len(), 11);
    up.finish().await.unwrap();
    let mut stream = s.get_stream("big").await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, b"hello world");
}

/// An in-memory store that answers a conditional create on an existing object with
/// `Precondition` (HTTP 412), as some S3-compatible stores do.
#[derive(Debug)]
struct PreconditionStore(InMemory);

impl fmt::Display for PreconditionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("precondition-store")
    }
}

#[async_trait]
impl ObjectStore for PreconditionStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.0.put_opts(location, payload, opts).await {
            Err(object_store::Error::AlreadyExists { path, source }) => {
                Err(object_store::Error::Precondition { path, source })
            }
            other => other,
        }
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.0.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.0.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.0.copy_if_not_exists(from, to).await
    }
}

#[tokio::test]
async fn precondition_failed_reads_as_already_exists() {
    let s = Storage::from_store(
        Arc::new(PreconditionStore(InMemory::new())),
        "test://".into(),
        "pre".into(),
    );
    assert_eq!(
        s.put_if_absent("wal/1", Bytes::from_static(b"a")).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s.put_if_absent("wal/1", Bytes::from_static(b"b")).await.unwrap(),
        PutOutcome::AlreadyExists,
        "a 412 answer to a conditional create must take the compare path, not fail the push forever"
    );
    assert_eq!(&s.get("wal/1").await.unwrap()[..], b"a");
}
