//! Settings for writing objects (compression method, zstd level and workers,
//! chunk size).
//!
//! These come from the repository configuration and only affect how new
//! objects are written: a reader takes everything it needs from the object
//! header, so changing them never makes old objects unreadable.

use serde::{Deserialize, Serialize};

use crate::format::error::FormatError;

/// Default plaintext bytes per sealed chunk (1 MiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// The job size of multi-threaded zstd when streaming an object. zstd's own choice at level 3
/// (8 MiB jobs, with `workers + 3` jobs of input and up to 8 output buffers) holds over 100 MiB;
/// 1 MiB jobs keep the same cores busy (a job takes a few milliseconds) at an eighth of that.
/// The frame format does not depend on it.
pub const ZSTD_JOB_SIZE: usize = 1 << 20;
/// Smallest accepted chunk size (keeps the 16-byte tag overhead under 2%).
pub const MIN_CHUNK_SIZE: u32 = 1 << 10;
/// Largest accepted chunk size; also bounds reader memory for hostile headers.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;

/// Compression applied before sealing. The numeric value is the header byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
}

impl Compression {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Result<Self, FormatError> {
        match b {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            other => Err(FormatError::UnsupportedFeature {
                field: "compression",
                value: u32::from(other),
            }),
        }
    }
}

/// How objects are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Codec {
    pub compression: Compression,
    /// zstd level (1..=22, or negative "fast" levels); ignored for `None`.
    pub zstd_level: i32,
    /// zstd worker threads; 0 compresses on the calling thread.
    pub zstd_workers: u32,
    /// Plaintext bytes per sealed chunk.
    pub chunk_size: u32,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            compression: Compression::Zstd,
            zstd_level: 3,
            zstd_workers: 0,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl Codec {
    /// Checks the settings; called by the writer before anything is written.
    pub fn validate(&self) -> Result<(), FormatError> {
        validate_chunk_size(self.chunk_size).map_err(FormatError::invalid_settings)?;
        if self.compression == Compression::Zstd {
            let range = zstd::compression_level_range();
            if !range.contains(&self.zstd_level) {
                return Err(FormatError::invalid_settings(format!(
                    "zstd_level {} is outside {}..={}",
                    self.zstd_level,
                    range.start(),
                    range.end()
                )));
            }
            if self.zstd_workers > 256 {
                return Err(FormatError::invalid_settings(format!(
                    "zstd_workers {} is more than 256",
                    self.zstd_workers
                )));
            }
        }
        Ok(())
    }
}

/// Shared by the writer's settings check and the reader's header check.
pub(crate) fn validate_chunk_size(chunk_size: u32) -> Result<(), String> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        Ok(())
    } else {
        Err(format!(
            "chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
        ))
    }
}
