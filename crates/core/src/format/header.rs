//! The object header (format version 1): encoding, parsing and validation.
//!
//! Kept apart from the writer and reader so the exact byte layout described
//! in FORMAT-objects.md lives in one place. Parsing distinguishes "not ours"
//! (bad magic), "newer than us" (version/method bytes) and "cut short".

use std::io::{self, Read};

use crate::format::codec::{validate_chunk_size, Compression};
use crate::format::error::FormatError;

/// Magic without the version byte.
pub const MAGIC_PREFIX: &[u8; 7] = b"PGVAULT";
/// Object format version written by this build (last byte of the magic).
pub const FORMAT_VERSION: u8 = 1;
/// The 8-byte magic of format version 1.
pub const MAGIC: &[u8; 8] = b"PGVAULT\x01";

/// Length of the chunk nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Bytes before the optional sealing part.
pub const FIXED_LEN: usize = 8 + 1 + 1 + 2 + 4 + NONCE_PREFIX_LEN; // 23
/// key id (8) + DEK-wrap nonce (12) + wrapped DEK (32 + 16).
pub const SEALED_EXTRA_LEN: usize = 8 + 12 + 48; // 68
/// Offset of the DEK-wrap nonce; the DEK wrap's AAD is `header[..WRAP_AAD_LEN]`.
pub const WRAP_AAD_LEN: usize = FIXED_LEN + 8; // 31

/// Sealing byte values.
pub const SEALING_NONE: u8 = 0;
pub const SEALING_AES256GCM: u8 = 1;

/// The sealing part of a header (present when sealing = aes-256-gcm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPart {
    pub key_id: [u8; 8],
    pub wrap_nonce: [u8; 12],
    pub wrapped_dek: [u8; 48],
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub compression: Compression,
    pub chunk_size: u32,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub sealed: Option<SealedPart>,
}

impl Header {
    /// The fixed part (everything before the sealing part).
    pub fn encode_fixed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + SEALED_EXTRA_LEN);
        out.extend_from_slice(MAGIC);
        out.push(self.compression.to_byte());
        out.push(if self.sealed.is_some() {
            SEALING_AES256GCM
        } else {
            SEALING_NONE
        });
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        out
    }

    /// The whole header: the AAD of every chunk.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_fixed();
        if let Some(s) = &self.sealed {
            out.extend_from_slice(&s.key_id);
            out.extend_from_slice(&s.wrap_nonce);
            out.extend_from_slice(&s.wrapped_dek);
        }
        out
    }

    /// Reads and validates a header; returns it with its raw bytes.
    pub fn read_from<R: Read>(r: &mut R) -> Result<(Header, Vec<u8>), FormatError> {
        let mut raw = vec![0u8; FIXED_LEN];
        let n = read_full(r, &mut raw[..8])?;
        if n < 8 {
            return Err(if raw[..n] == MAGIC[..n] {
                if n == 0 {
                    FormatError::truncated("empty object")
                } else {
                    FormatError::truncated(format!("only {n} bytes, the header is cut short"))
                }
            } else {
                FormatError::not_an_object("no pgvault magic")
            });
        }
        if raw[..7] != MAGIC_PREFIX[..] {
            return Err(FormatError::not_an_object(format!(
                "starts with {}, expected \"PGVAULT\"",
                hex::encode(&raw[..7])
            )));
        }
        let version = raw[7];
        if version != FORMAT_VERSION {
            return Err(if version > FORMAT_VERSION {
                FormatError::UnsupportedVersion {
                    what: "object",
                    found: u32::from(version),
                    supported: u32::from(FORMAT_VERSION),
                }
            } else {
                FormatError::not_an_object(format!("format version {version} does not exist"))
            });
        }
        let n = read_full(r, &mut raw[8..])?;
        if n < FIXED_LEN - 8 {
            return Err(FormatError::truncated("the header is cut short"));
        }
        let compression = Compression::from_byte(raw[8])?;
        let sealing = raw[9];
        if sealing != SEALING_NONE && sealing != SEALING_AES256GCM {
            return Err(FormatError::UnsupportedFeature {
                field: "sealing",
                value: u32::from(sealing),
            });
        }
        let reserved = u16::from_be_bytes([raw[10], raw[11]]);
        if reserved != 0 {
            return Err(FormatError::corrupt(format!(
                "reserved header field is {reserved:#06x}, expected 0"
            )));
        }
        let chunk_size = u32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]);
        validate_chunk_size(chunk_size)
            .map_err(|d| FormatError::corrupt(format!("header: {d}")))?;
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&raw[16..FIXED_LEN]);

        let sealed = if sealing == SEALING_AES256GCM {
            let mut extra = [0u8; SEALED_EXTRA_LEN];
            let n = read_full(r, &mut extra)?;
            if n < SEALED_EXTRA_LEN {
                return Err(FormatError::truncated("the header is cut short"));
            }
            raw.extend_from_slice(&extra);
            let mut s = SealedPart {
                key_id: [0; 8],
                wrap_nonce: [0; 12],
                wrapped_dek: [0; 48],
            };
            s.key_id.copy_from_slice(&extra[..8]);
            s.wrap_nonce.copy_from_slice(&extra[8..20]);
            s.wrapped_dek.copy_from_slice(&extra[20..]);
            Some(s)
        } else {
            None
        };
        Ok((
            Header {
                compression,
                chunk_size,
                nonce_prefix,
                sealed,
            },
            raw,
        ))
    }
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
/// Retries `Interrupted`; other I/O errors become [`FormatError::Io`].
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize, FormatError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FormatError::Io(e)),
        }
    }
    Ok(filled)
}
