//! A counting store for tests: an `ObjectStore` wrapper (over object_store's `InMemory` by
//! default) that counts the requests made through it (gets, ranged gets, heads, listings, puts,
//! deletes), so a test can assert that a command fetched "at most a handful of objects" instead
//! of one per backup or per WAL segment.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, Result,
};

/// Requests seen by a [`Counting`] store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Whole or ranged reads of an object's content.
    pub gets: u64,
    /// Metadata-only lookups.
    pub heads: u64,
    /// Listing requests (flat or by directory).
    pub lists: u64,
    pub puts: u64,
    pub deletes: u64,
}

impl Counts {
    /// Requests that read something (gets, heads and listings).
    pub fn reads(&self) -> u64 {
        self.gets + self.heads + self.lists
    }
}

/// The counting store; see [`Counting::counts`] and [`Counting::reset`].
pub struct Counting {
    inner: Arc<dyn ObjectStore>,
    gets: AtomicU64,
    heads: AtomicU64,
    lists: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
}

impl Default for Counting {
    fn default() -> Self {
        Counting::over(Arc::new(InMemory::new()))
    }
}

impl Counting {
    /// Counts the requests made to `inner`.
    pub fn over(inner: Arc<dyn ObjectStore>) -> Counting {
        Counting {
            inner,
            gets: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
        }
    }

    /// The requests seen since creation or the last [`Counting::reset`].
    pub fn counts(&self) -> Counts {
        Counts {
            gets: self.gets.load(Ordering::SeqCst),
            heads: self.heads.load(Ordering::SeqCst),
            lists: self.lists.load(Ordering::SeqCst),
            puts: self.puts.load(Ordering::SeqCst),
            deletes: self.deletes.load(Ordering::SeqCst),
        }
    }

    pub fn reset(&self) {
        for c in [&self.gets, &self.heads, &self.lists, &self.puts, &self.deletes] {
            c.store(0, Ordering::SeqCst);
        }
    }
}

impl fmt::Debug for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counting").field("counts", &self.counts()).finish()
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("counting://")
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let counter = if options.head { &self.heads } else { &self.gets };
        counter.fetch_add(1, Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }

    async fn head(&self, location: &Path) -> Result<ObjectMeta> {
        self.heads.fetch_add(1, Ordering::SeqCst);
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.copy_if_not_exists(from, to).await
    }
}
