//! The object header (format versions 1 and 2): encoding, parsing and validation.
//!
//! Kept apart from the writer and reader so the exact byte layout described
//! in docs/FORMAT.md lives in one place. Parsing distinguishes "not ours"
//! (bad magic), "newer than us" (version/method bytes) and "cut short".
//! Version 2 differs only in what the reader must supply (the object's
//! identity, see [`ObjectIdentity`]) and in an optional metadata block after
//! the sealing part, announced by bit 0 of the flags field (reserved in v1).

use std::io::{self, Read};

use crate::format::codec::{validate_chunk_size, Compression};
use crate::format::error::FormatError;

/// Magic without the version byte.
pub const MAGIC_PREFIX: &[u8; 7] = b"PGVAULT";
/// Newest object format version this build reads and writes (last byte of the magic).
pub const FORMAT_VERSION: u8 = 2;
/// The 8-byte magic of format version 1 (objects without identity binding).
pub const MAGIC: &[u8; 8] = b"PGVAULT\x01";
/// The 8-byte magic of format version 2 (identity-bound objects).
pub const MAGIC_V2: &[u8; 8] = b"PGVAULT\x02";
/// Flag bit (v2): a metadata block follows the sealing part.
pub const FLAG_METADATA: u16 = 1;
/// Largest metadata block (plaintext bytes).
pub const MAX_METADATA_LEN: usize = 64 * 1024;
/// A header prefix of this many bytes always holds the whole header, metadata included:
/// what a ranged read for [`crate::format::read_metadata`] asks for.
pub const MAX_HEADER_LEN: usize = FIXED_LEN + SEALED_EXTRA_LEN + 4 + MAX_METADATA_LEN + 16;
/// Domain separator that starts every identity.
pub const IDENTITY_DOMAIN: &[u8] = b"pgvault-object-v2\0";

/// Who an object is: the repository it belongs to and the key it is stored under. Never stored
/// in the object; the reader supplies the key it read from, so an object moved or swapped to
/// another key (or repository) fails authentication. Bound into every v2 object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectIdentity<'a> {
    pub repository_id: &'a str,
    pub key: &'a str,
}

impl<'a> ObjectIdentity<'a> {
    pub fn new(repository_id: &'a str, key: &'a str) -> Self {
        ObjectIdentity { repository_id, key }
    }

    /// `"pgvault-object-v2\0" || repository_id || "\0" || key`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(IDENTITY_DOMAIN.len() + self.repository_id.len() + 1 + self.key.len());
        out.extend_from_slice(IDENTITY_DOMAIN);
        out.extend_from_slice(self.repository_id.as_bytes());
        out.push(0);
        out.extend_from_slice(self.key.as_bytes());
        out
    }
}

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
    /// 1 or 2.
    pub version: u8,
    pub compression: Compression,
    pub chunk_size: u32,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub sealed: Option<SealedPart>,
    /// v2: the stored metadata block (ciphertext or plaintext, then its 16-byte tag).
    pub metadata: Option<Vec<u8>>,
}

impl Header {
    /// The flags field (reserved, always 0, in v1).
    fn flags(&self) -> u16 {
        if self.metadata.is_some() {
            FLAG_METADATA
        } else {
            0
        }
    }

    /// Length of the header up to the metadata bytes (the metadata's AAD), i.e. including
    /// the metadata length field when there is one.
    pub fn metadata_aad_len(&self) -> usize {
        FIXED_LEN + if self.sealed.is_some() { SEALED_EXTRA_LEN } else { 0 } + 4
    }

    /// The fixed part (everything before the sealing part).
    pub fn encode_fixed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + SEALED_EXTRA_LEN);
        out.extend_from_slice(if self.version >= 2 { MAGIC_V2 } else { MAGIC });
        out.push(self.compression.to_byte());
        out.push(if self.sealed.is_some() {
            SEALING_AES256GCM
        } else {
            SEALING_NONE
        });
        out.extend_from_slice(&self.flags().to_be_bytes());
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
        if let Some(m) = &self.metadata {
            // The block is at most MAX_METADATA_LEN + 16 bytes, so it fits a u32.
            out.extend_from_slice(&(m.len().saturating_sub(16) as u32).to_be_bytes());
            out.extend_from_slice(m);
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
        if version != 1 && version != 2 {
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
        let flags = u16::from_be_bytes([raw[10], raw[11]]);
        let known = if version >= 2 { FLAG_METADATA } else { 0 };
        if flags & !known != 0 {
            return Err(if version >= 2 {
                FormatError::UnsupportedFeature {
                    field: "header flag",
                    value: u32::from(flags & !known),
                }
            } else {
                FormatError::corrupt(format!("reserved header field is {flags:#06x}, expected 0"))
            });
        }
        let chunk_size = u32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]);
        validate_chunk_size(chunk_size).map_err(|d| FormatError::corrupt(format!("header: {d}")))?;
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
        let metadata = if flags & FLAG_METADATA != 0 {
            Some(read_metadata_block(r, &mut raw)?)
        } else {
            None
        };
        Ok((
            Header {
                version,
                compression,
                chunk_size,
                nonce_prefix,
                sealed,
                metadata,
            },
            raw,
        ))
    }
}

/// Reads the metadata block (length, then bytes and tag), bounded by [`MAX_METADATA_LEN`]
/// before anything is allocated; appends it to `raw`.
fn read_metadata_block<R: Read>(r: &mut R, raw: &mut Vec<u8>) -> Result<Vec<u8>, FormatError> {
    let mut len = [0u8; 4];
    if read_full(r, &mut len)? < 4 {
        return Err(FormatError::truncated("the header is cut short (metadata length)"));
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_METADATA_LEN {
        return Err(FormatError::corrupt(format!(
            "metadata block of {n} bytes, more than {MAX_METADATA_LEN}"
        )));
    }
    let mut block = vec![0u8; n + 16];
    if read_full(r, &mut block)? < block.len() {
        return Err(FormatError::truncated("the header is cut short (metadata)"));
    }
    raw.extend_from_slice(&len);
    raw.extend_from_slice(&block);
    Ok(block)
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
