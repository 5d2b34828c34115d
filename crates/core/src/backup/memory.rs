//! The memory a backup holds at most, and keeping the process's footprint close to it.
//!
//! A backup's memory must not grow with the database: every stage between the server and the
//! store holds a fixed number of fixed-size buffers. This module adds them up from the settings
//! that size them ([`BackupMemory::for_settings`]), so the formula documented in
//! docs/CONFIGURATION.md and docs/BENCHMARKS.md is code that a test holds to the goal (64 MiB at
//! the default settings), and it stops glibc's allocator from keeping freed buffers
//! ([`limit_allocator_retention`]), which otherwise doubles the resident size of the same heap.

use super::bundle::upload_budget;
use super::{FORWARD_CHUNK, FORWARD_DEPTH};
use crate::config::Config;
use crate::format::MAX_CHUNK_SIZE;
use crate::repository::Repository;

const MIB: usize = 1024 * 1024;

/// The input size of one zstd multi-threaded job. zstd's own choice at level 3 is 8 MiB (four
/// windows), and a stream holds about 13 jobs' worth of buffers (its round input buffer of
/// `workers + 3` jobs and up to 8 output buffers), over 100 MiB; 1 MiB jobs keep the same two
/// cores busy (a job takes a few milliseconds) at an eighth of that. The writer sets it
/// (`format::envelope`, `CParameter::JobSize`).
pub const ZSTD_JOB_SIZE: usize = crate::format::ZSTD_JOB_SIZE;

/// A zstd compression context at the levels backups use (1..=9: hash and chain tables, block
/// buffers), per worker; measured with heaptrack at level 3.
const ZSTD_CCTX: usize = 3 * MIB / 2;

/// A single-threaded zstd stream (`threads = 1` on one core): the context, its 2 MiB window at
/// level 3 and its in/out buffers.
const ZSTD_STREAM: usize = 4 * MIB;

/// What the process needs besides the pipeline, measured at the bench: code pages touched,
/// the runtime's threads, TLS and HTTP clients, the catalog of a few thousand files.
pub const BASELINE: usize = 16 * MIB;

/// The goal the defaults are held to.
pub const GOAL: usize = 64 * MIB;

/// The most memory each stage of a backup holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupMemory {
    /// Tar data in flight from the network task to the packing thread, and the replication
    /// connection's read buffer.
    pub forward: usize,
    /// The packing thread's read buffer.
    pub packer: usize,
    /// zstd: contexts, input and output buffers of its workers.
    pub compression: usize,
    /// The chunk being sealed (AES-256-GCM) and its sealed copy.
    pub sealing: usize,
    /// Sealed data on its way to the store: channels and multipart upload parts of the (at most
    /// two) bundles still uploading.
    pub uploads: usize,
    /// Everything else ([`BASELINE`]).
    pub baseline: usize,
}

impl BackupMemory {
    /// The budget for `workers` zstd worker threads (0: compression on the packing thread),
    /// object chunks of `chunk_size` bytes and `upload_parallel` parts in flight per upload.
    pub fn for_settings(workers: u32, chunk_size: usize, upload_parallel: usize) -> Self {
        let workers = workers as usize;
        let compression = if workers == 0 {
            ZSTD_STREAM
        } else {
            // The round input buffer holds `workers + 3` jobs; the job table has room for the next
            // power of two above `workers + 2` jobs, each with an output buffer.
            let slots = 1usize << ((workers + 2).ilog2() + 1);
            (workers + 3 + slots) * ZSTD_JOB_SIZE + workers * ZSTD_CCTX
        };
        BackupMemory {
            forward: (FORWARD_DEPTH + 1) * FORWARD_CHUNK + 128 * 1024,
            packer: 256 * 1024,
            compression,
            sealing: 2 * chunk_size.min(MAX_CHUNK_SIZE as usize),
            uploads: upload_budget(upload_parallel.max(1)),
            baseline: BASELINE,
        }
    }

    /// The budget of a backup run with `config`.
    pub fn for_config(config: &Config) -> Self {
        let codec = Repository::codec_for(config);
        let workers = if codec.compression == crate::format::Compression::None {
            0
        } else {
            codec.zstd_workers
        };
        Self::for_settings(workers, codec.chunk_size as usize, config.backup.upload_parallel)
    }

    pub fn total(&self) -> usize {
        self.forward + self.packer + self.compression + self.sealing + self.uploads + self.baseline
    }
}

/// Makes glibc return large freed buffers to the system instead of keeping them for reuse.
///
/// By default glibc raises its mmap threshold to the size of the largest block freed (up to
/// 32 MiB), after which every 1 MiB chunk and 5 MiB upload part comes from per-thread arenas,
/// and each of the backup's threads (runtime workers, the packer, zstd workers) keeps its own
/// arena with up to twice that size of free memory at its top: the same 33 MiB heap then has a
/// resident size of 65 MiB. A fixed threshold keeps blocks of 256 KiB and more in their own
/// mappings, unmapped when freed, and two arenas bound the per-thread copies. Process-wide and
/// idempotent; a no-op on other C libraries.
pub fn limit_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_MMAP_THRESHOLD: c_int = -3;
        const M_ARENA_MAX: c_int = -8;
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc and
        // takes no pointers. A refusal (return 0) leaves the defaults, which is harmless.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 256 * 1024);
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::UPLOAD_PART_SIZE;

    #[test]
    fn defaults_stay_within_the_goal_on_two_cores() {
        // The defaults: `[compression] threads = 0` (one worker per core; the bench has two),
        // 1 MiB chunks.
        let m = BackupMemory::for_settings(2, crate::format::DEFAULT_CHUNK_SIZE as usize, 1);
        assert!(m.total() <= GOAL, "{m:?}: {} MiB", m.total() / MIB);
        // Four cores still fit; the formula grows by a few MiB per worker.
        let four = BackupMemory::for_settings(4, crate::format::DEFAULT_CHUNK_SIZE as usize, 1);
        assert!(four.total() <= GOAL + 16 * MIB, "{four:?}");
    }

    #[test]
    fn two_workers_match_what_heaptrack_measured() {
        // Two workers at level 3 with 1 MiB jobs: zstd's allocations peaked at 16.3 MiB.
        let m = BackupMemory::for_settings(2, 1 << 20, 1);
        assert_eq!(m.compression, 13 * MIB + 3 * MIB);
        assert_eq!(m.sealing, 2 * MIB);
    }

    #[test]
    fn more_workers_cost_more_and_none_costs_least() {
        let one = BackupMemory::for_settings(1, 1 << 20, 1).compression;
        let two = BackupMemory::for_settings(2, 1 << 20, 1).compression;
        let eight = BackupMemory::for_settings(8, 1 << 20, 1).compression;
        let none = BackupMemory::for_settings(0, 1 << 20, 1).compression;
        assert!(none < one && one < two && two < eight, "{none} {one} {two} {eight}");
    }

    #[test]
    fn uploads_are_bounded_by_their_parts() {
        // Two uploads (one finishing, one being fed) of two parts each, and the feeding channel.
        let m = BackupMemory::for_settings(2, 1 << 20, 1);
        assert_eq!(m.uploads, 4 * UPLOAD_PART_SIZE + 3 * MIB);
        let four = BackupMemory::for_settings(2, 1 << 20, 4);
        assert_eq!(four.uploads - m.uploads, 2 * 3 * UPLOAD_PART_SIZE);
    }
}
