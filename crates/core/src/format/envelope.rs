//! Object writer and reader: header + per-object data key (envelope
//! encryption) + compression + chunk framing, as streaming `Write`/`Read`.
//!
//! Every object gets a fresh random data key wrapped by the repository master
//! key, so one key never encrypts more than one object's chunks and nonces
//! can never repeat across objects. Memory is bounded by one chunk plus the
//! zstd window, whatever the object size.
//!
//! Version 2 objects additionally bind their identity (repository id and key) into every AAD
//! and may carry an authenticated metadata block in the header; version 1 objects stay
//! readable.

use std::io::{self, Read, Write};

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::format::aead::Aes256Gcm;
use crate::format::chunk::{metadata_nonce, ChunkContext, ChunkReader, ChunkSealer, ChunkWriter, TAG_LEN};
use crate::format::codec::{Codec, Compression};
use crate::format::error::{into_format_error, is_format_error, FormatError};
#[cfg(doc)]
use crate::format::header::MAX_HEADER_LEN;
use crate::format::header::{Header, ObjectIdentity, SealedPart, MAX_METADATA_LEN, NONCE_PREFIX_LEN, WRAP_AAD_LEN};
use crate::format::keyring::MasterKey;

/// Sizes of a finished object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectStats {
    /// Bytes written by the caller (before compression).
    pub plain_bytes: u64,
    /// Bytes written to the sink (header, chunks and tags).
    pub stored_bytes: u64,
}

enum WriteStage<W: Write> {
    Plain(ChunkWriter<W>),
    Zstd(zstd::stream::write::Encoder<'static, ChunkWriter<W>>),
}

/// Streaming object writer. Nothing is complete until [`finish`]: an object
/// whose writer was dropped reads back as [`FormatError::Truncated`].
///
/// [`finish`]: ObjectWriter::finish
pub struct ObjectWriter<W: Write> {
    stage: WriteStage<W>,
    plain_bytes: u64,
}

pub(crate) fn zstd_err(e: io::Error) -> FormatError {
    if is_format_error(&e) {
        into_format_error(e)
    } else {
        FormatError::invalid_settings(format!("zstd: {e}"))
    }
}

/// What a v2 object binds: its identity and, optionally, a metadata block.
#[derive(Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub(crate) identity: ObjectIdentity<'a>,
    pub(crate) metadata: Option<&'a [u8]>,
}

impl<W: Write> ObjectWriter<W> {
    /// Validates `codec`, writes a version-1 header to `inner` and returns a writer.
    /// With `key`, the object is sealed with AES-256-GCM under a fresh data
    /// key; without, it is protected by the unkeyed integrity tag only.
    pub fn new(inner: W, codec: &Codec, key: Option<&MasterKey>) -> Result<Self, FormatError> {
        Self::with_body(inner, codec, key, false, None)
    }

    /// Like [`ObjectWriter::new`], but writes a version-2 object bound to `identity`, with an
    /// optional authenticated `metadata` block (at most [`MAX_METADATA_LEN`] bytes).
    pub fn new_bound(
        inner: W,
        codec: &Codec,
        key: Option<&MasterKey>,
        identity: ObjectIdentity<'_>,
        metadata: Option<&[u8]>,
    ) -> Result<Self, FormatError> {
        Self::with_body(inner, codec, key, false, Some(Binding { identity, metadata }))
    }

    /// The general constructor: `precompressed` means the caller writes a payload that is
    /// already compressed as `codec.compression` says (a complete zstd frame), used for whole
    /// in-memory objects, where one-shot compression is much faster than streaming.
    pub(crate) fn with_body(
        mut inner: W,
        codec: &Codec,
        key: Option<&MasterKey>,
        precompressed: bool,
        binding: Option<Binding<'_>>,
    ) -> Result<Self, FormatError> {
        codec.validate()?;
        let metadata = binding.and_then(|b| b.metadata);
        if let Some(m) = metadata {
            if m.len() > MAX_METADATA_LEN {
                return Err(FormatError::MetadataTooLarge {
                    len: m.len(),
                    max: MAX_METADATA_LEN,
                });
            }
        }
        let identity = binding.map(|b| b.identity.to_bytes()).unwrap_or_default();
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        OsRng.fill_bytes(&mut nonce_prefix);
        let mut header = Header {
            version: if binding.is_some() { 2 } else { 1 },
            compression: codec.compression,
            chunk_size: codec.chunk_size,
            nonce_prefix,
            sealed: None,
            // A placeholder of the final length: the flags and length fields are in the AADs.
            metadata: metadata.map(|m| vec![0u8; m.len() + TAG_LEN]),
        };
        let sealer = match key {
            None => ChunkSealer::Digest,
            Some(master) => {
                let mut dek = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(dek.as_mut());
                let mut wrap_nonce = [0u8; 12];
                OsRng.fill_bytes(&mut wrap_nonce);
                let key_id = master.key_id();
                // Mark the header sealed first: the sealing byte is in the AAD.
                header.sealed = Some(SealedPart {
                    key_id,
                    wrap_nonce,
                    wrapped_dek: [0u8; 48],
                });
                let mut aad = header.encode_fixed();
                aad.extend_from_slice(&key_id);
                debug_assert_eq!(aad.len(), WRAP_AAD_LEN);
                aad.extend_from_slice(&identity);
                let wrapped = master
                    .cipher()
                    .seal(&wrap_nonce, &aad, dek.as_ref())
                    .map_err(|_| FormatError::corrupt("wrapping the data key failed"))?;
                let mut wrapped_dek = [0u8; 48];
                if wrapped.len() != wrapped_dek.len() {
                    return Err(FormatError::corrupt("wrapped data key has the wrong length"));
                }
                wrapped_dek.copy_from_slice(&wrapped);
                header.sealed = Some(SealedPart {
                    key_id,
                    wrap_nonce,
                    wrapped_dek,
                });
                ChunkSealer::Aes(Box::new(Aes256Gcm::new(&dek)))
            }
        };
        if let Some(m) = metadata {
            let mut aad = identity.clone();
            aad.extend_from_slice(&header.encode()[..header.metadata_aad_len()]);
            let mut block = m.to_vec();
            sealer.seal(&metadata_nonce(&nonce_prefix), &aad, &mut block)?;
            header.metadata = Some(block);
        }
        let raw = header.encode();
        inner.write_all(&raw).map_err(FormatError::Io)?;
        let header_len = raw.len() as u64;
        let mut aad = identity;
        aad.extend_from_slice(&raw);
        let ctx = ChunkContext {
            sealer,
            header: aad,
            bound: binding.is_some(),
            prefix: nonce_prefix,
            chunk_size: codec.chunk_size as usize,
        };
        let chunks = ChunkWriter::new(inner, ctx, header_len);
        let stage = match codec.compression {
            _ if precompressed => WriteStage::Plain(chunks),
            Compression::None => WriteStage::Plain(chunks),
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(chunks, codec.zstd_level).map_err(zstd_err)?;
                enc.include_checksum(true).map_err(zstd_err)?;
                if codec.zstd_workers > 0 {
                    enc.multithread(codec.zstd_workers).map_err(zstd_err)?;
                    let job = super::codec::ZSTD_JOB_SIZE as u32;
                    enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(job))
                        .map_err(zstd_err)?;
                }
                WriteStage::Zstd(enc)
            }
        };
        Ok(ObjectWriter { stage, plain_bytes: 0 })
    }

    /// Completes the object (flushes compression, seals the final chunk,
    /// flushes the sink) and returns the sink with the object's sizes.
    pub fn finish(self) -> Result<(W, ObjectStats), FormatError> {
        let chunks = match self.stage {
            WriteStage::Plain(c) => c,
            WriteStage::Zstd(enc) => enc.finish().map_err(into_format_error)?,
        };
        let (inner, stored_bytes) = chunks.finish()?;
        Ok((
            inner,
            ObjectStats {
                plain_bytes: self.plain_bytes,
                stored_bytes,
            },
        ))
    }
}

impl<W: Write> Write for ObjectWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.stage {
            WriteStage::Plain(c) => c.write(buf)?,
            WriteStage::Zstd(e) => e.write(buf)?,
        };
        self.plain_bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stage {
            WriteStage::Plain(c) => c.flush(),
            WriteStage::Zstd(e) => e.flush(),
        }
    }
}

enum ReadStage<R: Read> {
    Plain(ChunkReader<R>),
    Zstd(Box<zstd::stream::read::Decoder<'static, ChunkReader<R>>>),
}

/// Streaming object reader. Errors from `read` are `io::Error`s; format
/// errors have kind `InvalidData` and carry a [`FormatError`] (recover it
/// with [`into_format_error`]); errors of the underlying reader keep their
/// kind. After an error every further `read` fails.
///
/// Data is released chunk by chunk as each chunk verifies: only `Ok(0)`
/// (EOF) proves the object is complete, so callers must not act on a
/// partially read object as if it were whole.
pub struct ObjectReader<R: Read> {
    stage: ReadStage<R>,
    header: Header,
    metadata: Option<Vec<u8>>,
    failed: Option<FormatError>,
}

/// The data key's unwrapping (or the unkeyed digest for unsealed objects), with the key rules
/// of [`ObjectReader::new`]. `identity` is the v2 identity bytes (empty for v1).
fn sealer_for(
    header: &Header,
    raw: &[u8],
    key: Option<&MasterKey>,
    identity: &[u8],
) -> Result<ChunkSealer, FormatError> {
    match (&header.sealed, key) {
        (Some(_), None) => Err(FormatError::KeyRequired),
        (None, Some(_)) => Err(FormatError::NotEncrypted),
        (None, None) => Ok(ChunkSealer::Digest),
        (Some(s), Some(master)) => {
            let expected = master.key_id();
            if s.key_id != expected {
                return Err(FormatError::WrongKey {
                    found: hex::encode(s.key_id),
                    expected: hex::encode(expected),
                });
            }
            let mut aad = raw[..WRAP_AAD_LEN].to_vec();
            aad.extend_from_slice(identity);
            let dek = Zeroizing::new(master.cipher().open(&s.wrap_nonce, &aad, &s.wrapped_dek).map_err(|_| {
                if header.version >= 2 {
                    FormatError::NotThisObject {
                        detail: "header or wrapped data key".into(),
                    }
                } else {
                    FormatError::corrupt("the header or its wrapped data key failed authentication")
                }
            })?);
            let dek: Zeroizing<[u8; 32]> = Zeroizing::new(
                dek.as_slice()
                    .try_into()
                    .map_err(|_| FormatError::corrupt("unwrapped data key has the wrong length"))?,
            );
            Ok(ChunkSealer::Aes(Box::new(Aes256Gcm::new(&dek))))
        }
    }
}

/// Authenticates (and decrypts) the header's metadata block, if it has one.
fn open_metadata(
    header: &Header,
    raw: &[u8],
    sealer: &ChunkSealer,
    identity: &[u8],
) -> Result<Option<Vec<u8>>, FormatError> {
    let Some(block) = &header.metadata else {
        return Ok(None);
    };
    let mut aad = identity.to_vec();
    aad.extend_from_slice(&raw[..header.metadata_aad_len()]);
    let mut buf = block.clone();
    if !sealer.open(&metadata_nonce(&header.nonce_prefix), &aad, &mut buf) {
        return Err(FormatError::NotThisObject {
            detail: "metadata".into(),
        });
    }
    buf.truncate(buf.len() - TAG_LEN);
    Ok(Some(buf))
}

/// The identity bytes a header needs: empty for v1, the identity for v2 (required).
fn identity_bytes(header: &Header, identity: Option<ObjectIdentity<'_>>) -> Result<Vec<u8>, FormatError> {
    match (header.version, identity) {
        (1, _) => Ok(Vec::new()),
        (_, Some(id)) => Ok(id.to_bytes()),
        (_, None) => Err(FormatError::IdentityRequired),
    }
}

/// Reads only the metadata block of an object from `prefix`, the object's first bytes (a ranged
/// read of [`MAX_HEADER_LEN`] bytes always suffices; the whole object works too), without
/// touching its body. `Ok(None)`: a v1 object, or a v2 object without metadata.
pub fn read_metadata(
    prefix: &[u8],
    key: Option<&MasterKey>,
    identity: ObjectIdentity<'_>,
) -> Result<Option<Vec<u8>>, FormatError> {
    let (header, raw) = Header::read_from(&mut &prefix[..])?;
    if header.metadata.is_none() {
        return Ok(None);
    }
    let id = identity_bytes(&header, Some(identity))?;
    let sealer = sealer_for(&header, &raw, key, &id)?;
    open_metadata(&header, &raw, &sealer, &id)
}

impl<R: Read> ObjectReader<R> {
    /// Reads and validates the header, checks the key and unwraps the
    /// object's data key. Reads version-1 objects only: a version-2 object
    /// needs its identity ([`ObjectReader::open`]).
    ///
    /// Key rules: a sealed object needs `Some(key)` (else
    /// [`FormatError::KeyRequired`]); an unsealed object is refused when a
    /// key is given ([`FormatError::NotEncrypted`]), because in an encrypted
    /// repository a plaintext object can only be a substitution or a mix-up.
    pub fn new(inner: R, key: Option<&MasterKey>) -> Result<Self, FormatError> {
        Self::open(inner, key, None)
    }

    /// Like [`ObjectReader::new`], for objects of either version: a v2 object is
    /// authenticated under `identity` (the repository id and the key it was read from) and
    /// fails with [`FormatError::NotThisObject`] under any other; a v1 object carries no
    /// identity and is read as before. `None` reads v1 objects only.
    pub fn open(
        mut inner: R,
        key: Option<&MasterKey>,
        identity: Option<ObjectIdentity<'_>>,
    ) -> Result<Self, FormatError> {
        let (header, raw) = Header::read_from(&mut inner)?;
        let id = identity_bytes(&header, identity)?;
        let sealer = sealer_for(&header, &raw, key, &id)?;
        let metadata = open_metadata(&header, &raw, &sealer, &id)?;
        let mut aad = id;
        aad.extend_from_slice(&raw);
        let ctx = ChunkContext {
            sealer,
            header: aad,
            bound: header.version >= 2,
            prefix: header.nonce_prefix,
            chunk_size: header.chunk_size as usize,
        };
        let chunks = ChunkReader::new(inner, ctx);
        let stage = match header.compression {
            Compression::None => ReadStage::Plain(chunks),
            Compression::Zstd => ReadStage::Zstd(Box::new(
                zstd::stream::read::Decoder::with_buffer(chunks)
                    .map_err(|e| FormatError::corrupt(format!("zstd decoder: {e}")))?,
            )),
        };
        Ok(ObjectReader {
            stage,
            header,
            metadata,
            failed: None,
        })
    }

    /// The object's authenticated metadata block (v2 objects that have one).
    pub fn metadata(&self) -> Option<&[u8]> {
        self.metadata.as_deref()
    }

    /// The object's format version (1 or 2).
    pub fn version(&self) -> u8 {
        self.header.version
    }

    /// Compression method recorded in the header.
    pub fn compression(&self) -> Compression {
        self.header.compression
    }

    /// Whether the object is sealed (encrypted).
    pub fn is_sealed(&self) -> bool {
        self.header.sealed.is_some()
    }

    /// Plaintext bytes per chunk recorded in the header.
    pub fn chunk_size(&self) -> u32 {
        self.header.chunk_size
    }
}

impl<R: Read> Read for ObjectReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(e.duplicate().into_io());
        }
        let res = match &mut self.stage {
            ReadStage::Plain(c) => c.read(buf),
            ReadStage::Zstd(d) => d.read(buf),
        };
        match res {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !is_format_error(&e) => Err(e),
            Err(e) => {
                let fe = if is_format_error(&e) {
                    into_format_error(e)
                } else {
                    // Only the zstd decoder produces errors that are not ours:
                    // the chunks verified, so the compressed stream is bad.
                    FormatError::corrupt(format!("compressed stream is invalid: {e}"))
                };
                self.failed = Some(fe.duplicate());
                Err(fe.into_io())
            }
        }
    }
}
