//! In-process fault injection for unit tests: an `ObjectStore` over object_store's `InMemory`
//! that fails the next calls of a kind in the ways real stores do (a request timing out, a
//! create that landed but whose answer was lost, a body cut off mid-response, a refusal), so the
//! retry logic of [`Storage`](super::Storage) is tested without servers.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// What the next call of a kind does instead of (or after) its real work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Fails with "operation timed out" without touching the store.
    Timeout,
    /// Does the work, then fails with "operation timed out" (the answer was lost).
    LandThenTimeout,
    /// A read whose body stops after half the bytes with "end of file before message length
    /// reached".
    CutOff,
    /// Fails with a permission error (not transient).
    Denied,
}

/// The faulty store. Queue faults with [`Faulty::fail_puts`] and [`Faulty::fail_gets`].
#[derive(Default)]
pub(crate) struct Faulty {
    inner: InMemory,
    puts: Mutex<VecDeque<Fault>>,
    gets: Mutex<VecDeque<Fault>>,
    /// Put and get calls seen (faulted or not).
    pub(crate) put_calls: AtomicU32,
    pub(crate) get_calls: AtomicU32,
}

fn generic(kind: std::io::ErrorKind, text: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: Box::new(std::io::Error::new(kind, text.to_string())),
    }
}

fn timeout() -> object_store::Error {
    generic(std::io::ErrorKind::TimedOut, "operation timed out")
}

fn denied(path: &Path) -> object_store::Error {
    object_store::Error::PermissionDenied {
        path: path.to_string(),
        source: "injected refusal".into(),
    }
}

fn next(queue: &Mutex<VecDeque<Fault>>) -> Option<Fault> {
    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
}

impl Faulty {
    pub(crate) fn fail_puts(&self, faults: &[Fault]) {
        self.puts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(faults.iter().copied());
    }

    pub(crate) fn fail_gets(&self, faults: &[Fault]) {
        self.gets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(faults.iter().copied());
    }
}

impl fmt::Debug for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Faulty")
    }
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("faulty://")
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.put_calls.fetch_add(1, Ordering::SeqCst);
        match next(&self.puts) {
            None | Some(Fault::CutOff) => self.inner.put_opts(location, payload, opts).await,
            Some(Fault::Timeout) => Err(timeout()),
            Some(Fault::Denied) => Err(denied(location)),
            Some(Fault::LandThenTimeout) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(timeout())
            }
        }
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.get_calls.fetch_add(1, Ordering::SeqCst);
        match next(&self.gets) {
            None | Some(Fault::LandThenTimeout) => self.inner.get_opts(location, options).await,
            Some(Fault::Timeout) => Err(timeout()),
            Some(Fault::Denied) => Err(denied(location)),
            Some(Fault::CutOff) => {
                let r = self.inner.get_opts(location, options).await?;
                let (meta, range, attributes) = (r.meta.clone(), r.range.clone(), r.attributes.clone());
                let all = r.bytes().await?;
                let half = Bytes::copy_from_slice(&all[..all.len() / 2]);
                let stream = futures::stream::iter([
                    Ok(half),
                    Err(generic(
                        std::io::ErrorKind::UnexpectedEof,
                        "end of file before message length reached",
                    )),
                ])
                .boxed();
                Ok(GetResult {
                    payload: GetResultPayload::Stream(stream),
                    meta,
                    range,
                    attributes,
                })
            }
        }
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}
