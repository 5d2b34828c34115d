//! pgvault's stored-object format: every object written to a repository is
//! compressed (zstd), then cut into chunks that are sealed STREAM-style with
//! AES-256-GCM under a per-object data key, itself wrapped by the repository
//! master key from the passphrase-protected [`Keyring`].
//!
//! The byte layout is specified in FORMAT-objects.md. Readers detect a wrong
//! passphrase, a wrong repository key, flipped bytes, truncation, reordering
//! and trailing data, each with its own [`FormatError`] variant.
//!
//! ```text
//! Keyring::create / unlock  -> MasterKey
//! ObjectWriter::new(sink, &Codec, Some(&key))  ... write ...  finish()
//! ObjectReader::new(source, Some(&key))        ... read to EOF ...
//! seal_bytes / open_bytes for small in-memory objects
//! ```

mod chunk;
mod codec;
mod envelope;
mod error;
mod header;
mod keyring;

#[cfg(test)]
mod tests;

pub use chunk::TAG_LEN;
pub use codec::{Codec, Compression, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
pub use envelope::{compress_for_seal, open_bytes, seal_bytes, seal_precompressed, ObjectReader, ObjectStats, ObjectWriter};
pub use error::{into_format_error, FormatError};
pub use header::{FIXED_LEN, FORMAT_VERSION, MAGIC, SEALED_EXTRA_LEN};
pub use keyring::{KdfParams, Keyring, MasterKey, KEYRING_VERSION, MIN_PASSPHRASE_CHARS};
