//! pgvault's stored-object format: every object written to a repository is
//! compressed (zstd), then cut into chunks that are sealed STREAM-style with
//! AES-256-GCM under a per-object data key, itself wrapped by the repository
//! master key from the passphrase-protected [`Keyring`].
//!
//! The byte layout is specified in docs/FORMAT.md. Version 2 objects bind
//! their [`ObjectIdentity`] (repository id and key) and may carry a small
//! metadata block; version 1 objects remain readable. Readers detect a wrong
//! passphrase, a wrong repository key, flipped bytes, truncation, reordering
//! and trailing data, each with its own [`FormatError`] variant.
//!
//! ```text
//! Keyring::create / unlock  -> MasterKey
//! ObjectWriter::new(sink, &Codec, Some(&key))  ... write ...  finish()
//! ObjectReader::new(source, Some(&key))        ... read to EOF ...
//! seal_bytes / open_bytes for small in-memory objects
//! ```

mod aead;
mod chunk;
mod codec;
mod envelope;
mod error;
mod header;
mod keyring;
mod memory;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_v2;

pub use chunk::TAG_LEN;
pub use codec::{Codec, Compression, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, ZSTD_JOB_SIZE};
pub use envelope::{read_metadata, ObjectReader, ObjectStats, ObjectWriter};
pub use error::{into_format_error, FormatError};
pub use header::{
    ObjectIdentity, FIXED_LEN, FORMAT_VERSION, MAGIC, MAGIC_V2, MAX_HEADER_LEN, MAX_METADATA_LEN, SEALED_EXTRA_LEN,
};
pub use keyring::{KdfParams, Keyring, MasterKey, KEYRING_VERSION, MIN_PASSPHRASE_CHARS};
pub use memory::{
    compress_for_seal, open_bytes, open_object, seal_bound, seal_bytes, seal_precompressed, OpenedObject,
};
