//! Whole objects in memory: sealing and opening WAL segments, catalogs and manifests in one go.
//!
//! Small objects are compressed in one shot (much faster than streaming through a window) and
//! sealed with the same envelope as streamed ones; opening returns the plaintext together with
//! the object's version and metadata block.

use std::io::{Read, Write};

use crate::format::codec::{Codec, Compression};
use crate::format::envelope::{zstd_err, Binding, ObjectReader, ObjectWriter};
use crate::format::error::{into_format_error, FormatError};
use crate::format::header::ObjectIdentity;
use crate::format::keyring::MasterKey;

/// Seals a small in-memory object (WAL segment, catalog, keyring-protected metadata) in one go,
/// as a version-1 object.
pub fn seal_bytes(data: &[u8], codec: &Codec, key: Option<&MasterKey>) -> Result<Vec<u8>, FormatError> {
    let compressed = compress_for_seal(data, codec)?;
    seal_precompressed(data, compressed.as_deref(), codec, key)
}

/// The compression half of [`seal_bytes`], which needs no key: a caller can compress while the
/// repository key is still being derived (what `archive_command` does). `None` when the codec
/// does not compress.
pub fn compress_for_seal(data: &[u8], codec: &Codec) -> Result<Option<Vec<u8>>, FormatError> {
    match codec.compression {
        Compression::Zstd => {
            // One shot: zstd reads the input in place instead of copying it through a window
            // buffer (about twice as fast for a 16 MiB WAL segment). Same frame format.
            let mut c = zstd::bulk::Compressor::new(codec.zstd_level).map_err(zstd_err)?;
            c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
                .map_err(zstd_err)?;
            if codec.zstd_workers > 0 {
                c.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(codec.zstd_workers))
                    .map_err(zstd_err)?;
            }
            Ok(Some(c.compress(data).map_err(zstd_err)?))
        }
        Compression::None => Ok(None),
    }
}

/// The sealing half of [`seal_bytes`] (version 1): `compressed` is what [`compress_for_seal`]
/// returned for `data` with the same `codec`.
pub fn seal_precompressed(
    data: &[u8],
    compressed: Option<&[u8]>,
    codec: &Codec,
    key: Option<&MasterKey>,
) -> Result<Vec<u8>, FormatError> {
    seal_object(data, compressed, codec, key, None)
}

/// Seals a small in-memory object as version 2, bound to `identity`, with an optional metadata
/// block. `compressed`: what [`compress_for_seal`] returned for `data` (or `None` to compress
/// here).
pub fn seal_bound(
    data: &[u8],
    compressed: Option<&[u8]>,
    codec: &Codec,
    key: Option<&MasterKey>,
    identity: ObjectIdentity<'_>,
    metadata: Option<&[u8]>,
) -> Result<Vec<u8>, FormatError> {
    seal_object(data, compressed, codec, key, Some(Binding { identity, metadata }))
}

fn seal_object(
    data: &[u8],
    compressed: Option<&[u8]>,
    codec: &Codec,
    key: Option<&MasterKey>,
    binding: Option<Binding<'_>>,
) -> Result<Vec<u8>, FormatError> {
    let own;
    let body = match (codec.compression, compressed) {
        (Compression::None, _) => None,
        (Compression::Zstd, Some(c)) => Some(c),
        (Compression::Zstd, None) => {
            own = compress_for_seal(data, codec)?;
            own.as_deref()
        }
    };
    let (payload, precompressed) = match body {
        Some(c) => (c, true),
        None => (data, false),
    };
    let mut w = ObjectWriter::with_body(
        Vec::with_capacity(payload.len() + 1024),
        codec,
        key,
        precompressed,
        binding,
    )?;
    w.write_all(payload).map_err(into_format_error)?;
    let (out, _) = w.finish()?;
    Ok(out)
}

/// A whole object read from memory: its plaintext and its metadata block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedObject {
    pub data: Vec<u8>,
    pub metadata: Option<Vec<u8>>,
    /// 1 or 2.
    pub version: u8,
}

/// Reads and verifies a whole version-1 object from memory.
pub fn open_bytes(data: &[u8], key: Option<&MasterKey>) -> Result<Vec<u8>, FormatError> {
    open_object(data, key, None).map(|o| o.data)
}

/// Reads and verifies a whole object of either version from memory (see
/// [`ObjectReader::open`]).
pub fn open_object(
    data: &[u8],
    key: Option<&MasterKey>,
    identity: Option<ObjectIdentity<'_>>,
) -> Result<OpenedObject, FormatError> {
    let mut r = ObjectReader::open(data, key, identity)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(into_format_error)?;
    Ok(OpenedObject {
        data: out,
        version: r.version(),
        metadata: r.metadata().map(<[u8]>::to_vec),
    })
}
