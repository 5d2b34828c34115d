//! Copying and verifying one object: streamed from the source store to the target store while
//! a blocking task opens it with the repository key and checks it, so that an object that does
//! not verify is never completed in the target, and memory stays bounded.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::format::{into_format_error, FormatError};
use crate::progress::Progress;
use crate::repository::catalog::Piece;
use crate::repository::gaps::WalGapMarker;
use crate::repository::objects::ChannelReader;
use crate::repository::walk::{walk_bundle, WalkError};
use crate::repository::{layout, BackupCatalog, ClusterIdentity, ObjectSealing, Repository};
use crate::storage::{Storage, StorageError, Upload};
use crate::wal::{self, WalFileName};

use super::plan::{Check, Job};
use super::{CopyError, BUFFERED_OBJECT_LIMIT};

/// The long page header and a little more: what the streamed header check reads.
const SEGMENT_HEAD: u64 = 64;

pub(super) async fn copy_catalog(source: &Repository, target: &Storage, cat: &BackupCatalog) -> Result<u64, CopyError> {
    let key = layout::catalog_key(&cat.id);
    let raw = source.storage().get(&key).await?;
    let plain = source.unseal(&key, &raw)?;
    let parsed: BackupCatalog = serde_json::from_slice(&plain).map_err(|e| CopyError::Invalid {
        location: format!("{}/{key}", source.storage()),
        message: format!("not a valid catalog: {e}"),
    })?;
    if parsed.id != cat.id {
        return Err(CopyError::Invalid {
            location: format!("{}/{key}", source.storage()),
            message: format!("the catalog is backup {}'s, not {}'s", parsed.id, cat.id),
        });
    }
    let n = raw.len() as u64;
    target.put(&key, raw).await?;
    Ok(n)
}

/// Stores the declared gaps `gaps` in the target (through its [`Repository`], sealed with the
/// shared repository key), so that its `list`, `verify` and `restore` name the same holes as the
/// source's. Returns how many were stored, and a failure line per marker that was not.
pub(super) async fn copy_gaps(target: &Repository, gaps: &[WalGapMarker]) -> (usize, Vec<String>) {
    let mut stored = 0;
    let mut failures = Vec::new();
    for m in gaps {
        match target.put_wal_gap(m).await {
            Ok(()) => stored += 1,
            Err(e) => failures.push(format!("WAL gap marker {}..{}: {e}", m.first, m.last)),
        }
    }
    (stored, failures)
}

/// What every object copy needs.
#[derive(Clone)]
pub(super) struct Ctx {
    pub source: Storage,
    pub target: Storage,
    pub sealing: ObjectSealing,
    pub progress: Arc<dyn Progress>,
}

pub(super) async fn run_jobs(ctx: &Ctx, jobs: Vec<Job>, parallel: usize) -> Vec<(Job, Result<u64, CopyError>)> {
    stream::iter(jobs)
        .map(|job| {
            let ctx = ctx.clone();
            async move {
                let r = copy_object(&ctx, &job).await;
                (job, r)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Where the verified bytes go.
enum Sink {
    /// Small objects stored create-if-absent once complete.
    Buffer(Vec<u8>),
    Upload(Box<Upload>),
}

/// Streams one object from the source to the target while a blocking task opens and checks it;
/// the object is completed in the target only if every byte was read and verified. Returns the
/// bytes stored.
async fn copy_object(ctx: &Ctx, job: &Job) -> Result<u64, CopyError> {
    let location = format!("{}/{}", ctx.source, job.key);
    let mut stream = ctx.source.get_stream(&job.key).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, StorageError>>(8);
    let (sealing, check, loc, object_key) = (
        ctx.sealing.clone(),
        job.check.clone(),
        location.clone(),
        job.key.clone(),
    );
    let verifier = tokio::task::spawn_blocking(move || {
        verify(ChannelReader::from_receiver(rx), &sealing, &object_key, &check, &loc)
    });
    let mut sink = if job.create_only && job.size <= BUFFERED_OBJECT_LIMIT {
        Sink::Buffer(Vec::with_capacity(job.size as usize))
    } else {
        Sink::Upload(Box::new(ctx.target.upload(&job.key).await?))
    };
    let mut failure: Option<CopyError> = None;
    let mut bytes = 0u64;
    while let Some(item) = stream.next().await {
        let chunk = match item {
            Ok(c) => c,
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        };
        bytes += chunk.len() as u64;
        ctx.progress.advance(chunk.len() as u64);
        let written = match &mut sink {
            Sink::Buffer(v) => {
                v.extend_from_slice(&chunk);
                Ok(())
            }
            Sink::Upload(u) => u.write(&chunk).await,
        };
        if let Err(e) = written {
            failure = Some(e.into());
            break;
        }
        // A closed channel means the verifier stopped on an error: its result says which.
        if tx.send(Ok(chunk)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let verified = verifier
        .await
        .map_err(|e| CopyError::Internal(format!("verifying {location}: {e}")))?;
    // A read failure of the source shows up in the verifier as a truncated object: report the
    // cause instead.
    if let Some(e) = failure.or(verified.err()) {
        if let Sink::Upload(u) = sink {
            u.abort().await;
        }
        return Err(e);
    }
    match sink {
        Sink::Buffer(v) => {
            // Create-if-absent: a WAL object that appeared meanwhile is never replaced.
            ctx.target.put_if_absent(&job.key, Bytes::from(v)).await?;
        }
        Sink::Upload(u) => u.finish().await?,
    }
    Ok(bytes)
}

/// Opens the object and checks it to the end.
pub(super) fn verify<R: Read>(
    reader: R,
    sealing: &ObjectSealing,
    object_key: &str,
    check: &Check,
    location: &str,
) -> Result<(), CopyError> {
    let object_err = |source: FormatError| CopyError::Object {
        location: location.to_string(),
        source,
    };
    let read_err = |e: io::Error| object_err(into_format_error(e));
    let invalid = |message: String| CopyError::Invalid {
        location: location.to_string(),
        message,
    };
    let mut obj = sealing.reader(reader, object_key).map_err(object_err)?;
    match check {
        Check::Opens => {
            io::copy(&mut obj, &mut io::sink()).map_err(read_err)?;
        }
        Check::Sha256(expected) => {
            let mut h = HashWriter(Sha256::new());
            io::copy(&mut obj, &mut h).map_err(read_err)?;
            let found = hex::encode(h.0.finalize());
            if &found != expected {
                return Err(CopyError::Checksum {
                    location: location.to_string(),
                    path: "backup_manifest".into(),
                    offset: 0,
                    expected: expected.clone(),
                    found,
                });
            }
        }
        Check::Segment { name, cluster } => {
            check_streamed_segment(&mut obj, name, cluster).map_err(|e| match e {
                SegmentReadError::Read(e) => read_err(e),
                SegmentReadError::Wal(e) => invalid(e.to_string()),
            })?;
        }
        Check::Bundle { pieces, size } => {
            // The one bundle verifier (restore uses it too), with a sink that keeps nothing.
            let nop = |_: usize, _: &Piece, _: u64, _: &[u8]| Ok::<(), CopyError>(());
            walk_bundle(&mut obj, pieces.iter().map(|(_, p)| p), Some(*size), nop).map_err(|e| match e {
                WalkError::Read(e) => read_err(e),
                WalkError::Checksum {
                    index,
                    offset,
                    expected,
                    found,
                } => CopyError::Checksum {
                    location: location.to_string(),
                    path: pieces[index].0.clone(),
                    offset,
                    expected,
                    found,
                },
                WalkError::Sink(e) => e,
                other => invalid(other.to_string()),
            })?;
        }
    }
    Ok(())
}

struct HashWriter(Sha256);

impl io::Write for HashWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a streamed segment failed its check.
#[derive(Debug)]
enum SegmentReadError {
    Read(io::Error),
    Wal(wal::WalError),
}

/// The one segment check ([`wal::check_segment_header`] and [`wal::check_segment`]) on a
/// segment read as a stream: only the long page header is kept and the rest is counted, except
/// when the header's timeline is not the name's (the first segment of a promoted timeline starts
/// with its parent's pages): then the whole segment, at most one segment size, is read and its
/// content checked for the switch to the name's timeline.
fn check_streamed_segment<R: Read>(
    obj: &mut R,
    name: &WalFileName,
    cluster: &ClusterIdentity,
) -> Result<(), SegmentReadError> {
    let (sysid, seg, major) = (cluster.system_identifier, cluster.wal_segment_size, cluster.major());
    let mut head = Vec::with_capacity(SEGMENT_HEAD as usize);
    obj.take(SEGMENT_HEAD)
        .read_to_end(&mut head)
        .map_err(SegmentReadError::Read)?;
    let same_timeline = wal::read_segment_header(name, &head).map_or(true, |h| h.timeline == name.timeline);
    if same_timeline {
        let rest = io::copy(obj, &mut io::sink()).map_err(SegmentReadError::Read)?;
        let len = head.len() as u64 + rest;
        wal::check_segment_header(name, &head, len, sysid, seg, major).map_err(SegmentReadError::Wal)?;
        return Ok(());
    }
    // Bounded: one byte past a segment is enough to tell that the length is wrong.
    let mut data = head;
    obj.take((seg + 1).saturating_sub(data.len() as u64))
        .read_to_end(&mut data)
        .map_err(SegmentReadError::Read)?;
    let beyond = io::copy(obj, &mut io::sink()).map_err(SegmentReadError::Read)?;
    if beyond > 0 {
        let len = data.len() as u64 + beyond;
        wal::check_segment_header(name, &data, len, sysid, seg, major).map_err(SegmentReadError::Wal)?;
    }
    wal::check_segment(name, &data, sysid, seg, major).map_err(SegmentReadError::Wal)
}

#[cfg(test)]
#[path = "object_tests.rs"]
mod tests;
