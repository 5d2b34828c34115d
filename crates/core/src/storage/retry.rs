//! Bounded retries of whole-object reads and writes that the store failed for now.
//!
//! object_store retries a request only up to the response headers, and never retries a
//! non-idempotent one (a conditional create) that timed out: one stalled response would fail a
//! WAL push, and one body cut off mid-response (which for S3 can surface as the request's own
//! error) would stop recovery. Here every such operation is tried again a bounded number of times
//! with backoff, but only for failures of a transient kind ([`StorageErrorKind::is_unavailable`]).
//!
//! A retried conditional create may meet the object its own first attempt created (the request
//! landed, the answer was lost): the stored object is read back and compared byte for byte, and
//! identical content is reported as [`PutOutcome::Created`]. Anything else is
//! [`PutOutcome::AlreadyExists`], so callers (WAL push) still compare content themselves.

use std::future::Future;

use bytes::Bytes;
use object_store::{GetOptions, GetRange, PutMode, PutOptions, PutPayload};

use super::stream::{body_backoff, BODY_RETRIES};
use super::{PutOutcome, Storage, StorageError, StorageErrorKind};

/// How often a write, or a read whose request failed transiently, is tried again.
pub const OP_RETRIES: u32 = 4;

/// Whether trying the same operation again may help.
fn transient(e: &StorageError) -> bool {
    e.kind().is_unavailable()
}

impl Storage {
    /// Runs `attempt` (given the retry number, 0 first) until it succeeds, fails for good, or
    /// [`OP_RETRIES`] retries are spent.
    pub(super) async fn retrying<T, F, Fut>(&self, op: &str, key: &str, mut attempt: F) -> Result<T, StorageError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let mut n = 0;
        loop {
            match attempt(n).await {
                Err(e) if n < OP_RETRIES && transient(&e) => {
                    n += 1;
                    tracing::warn!(key, attempt = n, "{op} {key} failed ({e}); retrying");
                    tokio::time::sleep(body_backoff(n)).await;
                }
                r => return r,
            }
        }
    }

    /// Stores `data` under `key`, atomically replacing any previous object. Transient failures
    /// are retried (replacing is idempotent).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.retrying("write", key, |_| {
            let payload = PutPayload::from(data.clone());
            async move {
                self.inner
                    .put(&self.path(key), payload)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.err("write", key, e))
            }
        })
        .await
    }

    /// Stores `data` under `key` unless an object is already there; never overwrites.
    /// Transient failures are retried; see the module documentation for what a retry that
    /// meets an existing object reports.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome, StorageError> {
        if !self.conditional_create {
            if self.head(key).await?.is_some() {
                return Ok(PutOutcome::AlreadyExists);
            }
            self.put(key, data).await?;
            return Ok(PutOutcome::Created);
        }
        let mut retried = false;
        let outcome = self
            .retrying("create", key, |n| {
                retried |= n > 0;
                let payload = PutPayload::from(data.clone());
                async move { self.create_once(key, payload).await }
            })
            .await?;
        if outcome == PutOutcome::AlreadyExists && retried && self.holds(key, &data).await {
            tracing::info!(key, "a retried create found its own first attempt stored");
            return Ok(PutOutcome::Created);
        }
        Ok(outcome)
    }

    /// One conditional create.
    async fn create_once(&self, key: &str, payload: PutPayload) -> Result<PutOutcome, StorageError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.inner.put_opts(&self.path(key), payload, opts).await {
            Ok(_) => Ok(PutOutcome::Created),
            // Some stores answer a conditional create on an existing object with 412
            // "precondition failed" instead of 409: the object is there all the same.
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => match self.err("write", key, e) {
                e if e.kind() == StorageErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
                e => Err(e),
            },
        }
    }

    /// Whether `key` holds exactly `data` (false when it cannot be read).
    async fn holds(&self, key: &str, data: &Bytes) -> bool {
        match self.get(key).await {
            Ok(stored) => stored == *data,
            Err(e) => {
                tracing::warn!(key, "cannot read back {key} after a retried create: {e}");
                false
            }
        }
    }

    /// Reads a whole (small) object. A request that fails transiently, and a response cut off
    /// mid-body (which object_store does not always retry), are tried again, a bounded number
    /// of times.
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.read_whole(key, GetOptions::default()).await
    }

    /// The first `len` bytes of `key` (fewer when the object is shorter): one ranged read, for
    /// headers such as the metadata push stores with each WAL segment. Retried like [`Storage::get`].
    pub async fn get_prefix(&self, key: &str, len: u64) -> Result<Bytes, StorageError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..len)),
            ..Default::default()
        };
        self.read_whole(key, options).await
    }

    async fn read_whole(&self, key: &str, options: GetOptions) -> Result<Bytes, StorageError> {
        let path = self.path(key);
        let mut attempt = 0;
        loop {
            let why = match self.inner.get_opts(&path, options.clone()).await {
                Ok(r) => match r.bytes().await {
                    Ok(b) => return Ok(b),
                    Err(e) if matches!(e, object_store::Error::NotFound { .. }) => return Err(self.err("read", key, e)),
                    Err(e) => self.err("read", key, e),
                },
                Err(e) => match self.err("read", key, e) {
                    e if transient(&e) => e,
                    e => return Err(e),
                },
            };
            if attempt >= BODY_RETRIES {
                return Err(why);
            }
            attempt += 1;
            tracing::warn!(key, attempt, "reading {key} failed or was cut off ({why}); retrying");
            tokio::time::sleep(body_backoff(attempt)).await;
        }
    }
}

#[cfg(test)]
mod tests;
