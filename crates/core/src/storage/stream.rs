//! Streamed reads that resume after a cut-off body, and streamed multipart uploads with bounded
//! memory: the two halves of [`Storage`] that move large objects (bundles) without holding them.

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::WriteMultipart;

use super::{OperationError, Storage, StorageError, StorageErrorKind};

/// How often a read whose body was cut off is retried.
pub(super) const BODY_RETRIES: u32 = 5;

pub(super) fn body_backoff(attempt: u32) -> std::time::Duration {
    let base = 100u64 << attempt.min(5);
    std::time::Duration::from_millis(base + rand::random::<u64>() % base)
}

/// State of a [`Storage::get_stream`] that resumes after a cut-off body.
pub(super) struct ResumableRead {
    pub(super) storage: Storage,
    pub(super) key: String,
    pub(super) path: Path,
    pub(super) e_tag: Option<String>,
    pub(super) size: u64,
    pub(super) offset: u64,
    pub(super) attempts: u32,
    pub(super) body: Option<BoxStream<'static, object_store::Result<Bytes>>>,
}

impl ResumableRead {
    async fn retry(&mut self, why: &str) -> Result<(), StorageError> {
        if self.attempts >= BODY_RETRIES {
            let detail = format!("the download was cut off {} times (last: {why})", self.attempts + 1);
            return Err(OperationError::new(
                StorageErrorKind::Transient,
                &self.storage.display,
                "read",
                &self.key,
                detail,
            )
            .into());
        }
        self.attempts += 1;
        tracing::warn!(key = %self.key, offset = self.offset, attempt = self.attempts, "download cut off ({why}); resuming");
        tokio::time::sleep(body_backoff(self.attempts)).await;
        let opts = object_store::GetOptions {
            range: Some(object_store::GetRange::Offset(self.offset)),
            if_match: self.e_tag.clone(),
            ..Default::default()
        };
        match self.storage.inner.get_opts(&self.path, opts).await {
            Ok(r) => {
                self.body = Some(r.into_stream());
                Ok(())
            }
            Err(e) => Err(self.storage.err("read", &self.key, e)),
        }
    }

    /// The object's bytes, resuming after cut-offs.
    pub(super) fn into_stream(self) -> BoxStream<'static, Result<Bytes, StorageError>> {
        futures::stream::unfold(self, |mut st| async move {
            loop {
                if let Some(body) = st.body.as_mut() {
                    match body.next().await {
                        Some(Ok(b)) => {
                            st.offset += b.len() as u64;
                            return Some((Ok(b), st));
                        }
                        None if st.offset >= st.size => return None,
                        None => {
                            st.body = None;
                            if let Err(e) = st.retry("ended early").await {
                                return Some((Err(e), st.done()));
                            }
                        }
                        Some(Err(e)) => {
                            st.body = None;
                            if let Err(e) = st.retry(&e.to_string()).await {
                                return Some((Err(e), st.done()));
                            }
                        }
                    }
                } else {
                    return None;
                }
            }
        })
        .boxed()
    }

    fn done(mut self) -> Self {
        self.body = None;
        self.offset = self.size;
        self
    }
}

/// How many parts of one streamed upload may be in flight at once. Two keep a loopback or LAN
/// store busy (one part is sent while the next is filled); more only cost memory.
pub const UPLOAD_CONCURRENCY: usize = 2;
/// Size of one part of a streamed upload: S3's smallest allowed part (5 MiB), which allows
/// objects of up to 50 000 MiB (10 000 parts), far above the bundle size.
pub const UPLOAD_PART_SIZE: usize = 5 * 1024 * 1024;
/// The most memory one streamed upload holds at the default concurrency: the parts in flight and
/// the one being filled.
pub const UPLOAD_MEMORY: usize = (UPLOAD_CONCURRENCY + 1) * UPLOAD_PART_SIZE;

/// A streamed, multipart upload with bounded memory: `(concurrency + 1)` parts ([`UPLOAD_MEMORY`]
/// at the default).
pub struct Upload {
    writer: WriteMultipart,
    key: String,
    storage: Storage,
    bytes: u64,
    concurrency: usize,
}

impl Upload {
    pub(super) fn new(storage: Storage, key: &str, up: Box<dyn object_store::MultipartUpload>) -> Upload {
        Upload {
            writer: WriteMultipart::new_with_chunk_size(up, UPLOAD_PART_SIZE),
            key: key.to_string(),
            storage,
            bytes: 0,
            concurrency: UPLOAD_CONCURRENCY,
        }
    }

    /// Sends up to `n` parts at once (at least 1): the upload then holds at most `n + 1` parts.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.writer
            .wait_for_capacity(self.concurrency)
            .await
            .map_err(|e| self.storage.err("upload", &self.key, e))?;
        self.writer.write(data);
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Completes the upload: only now does the object exist under its key.
    pub async fn finish(self) -> Result<(), StorageError> {
        let Upload {
            writer, key, storage, ..
        } = self;
        writer
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| storage.err("complete upload of", &key, e))
    }

    /// Gives up; nothing is left under the key.
    pub async fn abort(self) {
        let _ = self.writer.abort().await;
    }
}
