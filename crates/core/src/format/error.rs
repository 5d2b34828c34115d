//! Typed errors for the stored-object format.
//!
//! Callers (restore, verify, archive-get) must be able to tell a wrong
//! passphrase from a damaged object from a truncated upload from a file that
//! was never ours, so every failure the format can detect has its own variant
//! with an operator-facing message. Errors that travel through `std::io`
//! (the `Read`/`Write` impls) are wrapped in an `io::Error` of kind
//! `InvalidData`; [`into_format_error`] (or `FormatError::from`) recovers the
//! typed error.

use std::io;

/// Everything that can go wrong while creating, unlocking, writing or reading
/// pgvault keyrings and stored objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The passphrase did not unwrap the repository master key.
    #[error(
        "the passphrase does not unlock this repository's key: \
         check [encryption] passphrase_file / PGVAULT_PASSPHRASE"
    )]
    WrongPassphrase,

    /// A new passphrase was refused (too short or empty).
    #[error("passphrase refused: {reason}")]
    WeakPassphrase { reason: String },

    /// The keyring document is malformed or its parameters are out of range.
    #[error("repository keyring is invalid: {detail}")]
    BadKeyring { detail: String },

    /// An object (or a part of it) failed authentication, or its structure is
    /// inconsistent.
    #[error("object is corrupted or was modified ({detail})")]
    Corrupt { detail: String },

    /// A v2 object failed authentication under the identity (repository id and key) the
    /// reader supplied: it is damaged, or it was moved or swapped from another key.
    #[error("object failed authentication: it is corrupted, or it is not the object stored under this name (moved or swapped) ({detail})")]
    NotThisObject { detail: String },

    /// A v2 (identity-bound) object was opened without saying which key it was read from.
    #[error("object is identity-bound (format version 2): the reader must supply the key it was read from")]
    IdentityRequired,

    /// A metadata block larger than the format allows was offered to the writer.
    #[error("object metadata of {len} bytes is more than the {max} the format allows")]
    MetadataTooLarge { len: usize, max: usize },

    /// Metadata was offered for a version-1 object, which has no metadata block.
    #[error("object metadata needs format version 2 (an identity-bound object)")]
    MetadataNeedsV2,

    /// The object ended before its final chunk.
    #[error("object is truncated ({detail})")]
    Truncated { detail: String },

    /// The bytes do not start with the pgvault object magic.
    #[error("not a pgvault object ({detail})")]
    NotAnObject { detail: String },

    /// A keyring or object written by a newer pgvault.
    #[error("{what} was written by a newer pgvault: format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },

    /// A header field holds a value this build does not know.
    #[error("object uses an unknown {field} method {value} (written by a newer pgvault?)")]
    UnsupportedFeature { field: &'static str, value: u32 },

    /// A sealed (encrypted) object was opened without a key.
    #[error("object is encrypted: the repository key is required to read it")]
    KeyRequired,

    /// An unsealed object was opened with a key: in an encrypted repository
    /// every object must be sealed, and accepting a plaintext object would let
    /// anyone with write access to the storage substitute content.
    #[error(
        "object is not encrypted, but this repository is: refusing to read it \
         (it may have been substituted)"
    )]
    NotEncrypted,

    /// The object was sealed under a different repository master key.
    #[error(
        "object was encrypted with a different repository key \
         (object key id {found}, this repository's key id {expected})"
    )]
    WrongKey { found: String, expected: String },

    /// Codec settings out of range.
    #[error("invalid format settings: {detail}")]
    InvalidSettings { detail: String },

    /// The object would need more chunks than the 32-bit counter allows.
    #[error("object too large for its chunk size ({chunk_size} bytes per chunk): use a larger chunk size")]
    TooLarge { chunk_size: u32 },

    /// An error from the underlying reader or writer.
    #[error("I/O error: {0}")]
    Io(io::Error),
}

impl FormatError {
    pub(crate) fn corrupt(detail: impl Into<String>) -> Self {
        FormatError::Corrupt { detail: detail.into() }
    }

    pub(crate) fn truncated(detail: impl Into<String>) -> Self {
        FormatError::Truncated { detail: detail.into() }
    }

    pub(crate) fn not_an_object(detail: impl Into<String>) -> Self {
        FormatError::NotAnObject { detail: detail.into() }
    }

    pub(crate) fn bad_keyring(detail: impl Into<String>) -> Self {
        FormatError::BadKeyring { detail: detail.into() }
    }

    pub(crate) fn invalid_settings(detail: impl Into<String>) -> Self {
        FormatError::InvalidSettings { detail: detail.into() }
    }

    /// A copy for a reader/writer that keeps failing after its first error
    /// (`io::Error` is not `Clone`, so I/O errors keep kind and message).
    pub(crate) fn duplicate(&self) -> FormatError {
        use FormatError::*;
        match self {
            WrongPassphrase => WrongPassphrase,
            WeakPassphrase { reason } => WeakPassphrase { reason: reason.clone() },
            BadKeyring { detail } => BadKeyring { detail: detail.clone() },
            Corrupt { detail } => Corrupt { detail: detail.clone() },
            NotThisObject { detail } => NotThisObject { detail: detail.clone() },
            IdentityRequired => IdentityRequired,
            MetadataTooLarge { len, max } => MetadataTooLarge { len: *len, max: *max },
            MetadataNeedsV2 => MetadataNeedsV2,
            Truncated { detail } => Truncated { detail: detail.clone() },
            NotAnObject { detail } => NotAnObject { detail: detail.clone() },
            UnsupportedVersion { what, found, supported } => UnsupportedVersion {
                what,
                found: *found,
                supported: *supported,
            },
            UnsupportedFeature { field, value } => UnsupportedFeature { field, value: *value },
            KeyRequired => KeyRequired,
            NotEncrypted => NotEncrypted,
            WrongKey { found, expected } => WrongKey {
                found: found.clone(),
                expected: expected.clone(),
            },
            InvalidSettings { detail } => InvalidSettings { detail: detail.clone() },
            TooLarge { chunk_size } => TooLarge {
                chunk_size: *chunk_size,
            },
            Io(e) => Io(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Wrap for transport through `std::io` traits. I/O errors travel with
    /// their original kind; every format error is `InvalidData`.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            FormatError::Io(e) => {
                let kind = e.kind();
                io::Error::new(kind, FormatError::Io(e))
            }
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Recovers the typed error from an `io::Error` returned by
/// [`ObjectReader`](crate::format::ObjectReader) or
/// [`ObjectWriter`](crate::format::ObjectWriter); any other `io::Error`
/// becomes [`FormatError::Io`].
pub fn into_format_error(e: io::Error) -> FormatError {
    if !is_format_error(&e) {
        return FormatError::Io(e);
    }
    let kind = e.kind();
    match e.into_inner() {
        Some(inner) => match inner.downcast::<FormatError>() {
            Ok(fe) => *fe,
            Err(other) => FormatError::Io(io::Error::new(kind, other)),
        },
        None => FormatError::Io(io::Error::from(kind)),
    }
}

impl From<io::Error> for FormatError {
    fn from(e: io::Error) -> Self {
        into_format_error(e)
    }
}

/// Borrowing check used by the reader to decide whether an error coming out
/// of the zstd decoder originated in our own layers.
pub(crate) fn is_format_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<FormatError>())
}
