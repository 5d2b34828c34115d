//! CRC-32C of reconstructed files, gathered block by block while a chain restore writes them.
//!
//! The combined `backup_manifest` needs each reconstructed file's CRC-32C. Reading every such
//! file back after the restore (the whole database, for a chain whose newest link touched every
//! relation) cost a second pass over the data. Instead, every block's CRC is taken from the bytes
//! as they are written (each output block has exactly one source, written once, in any order),
//! and the file's CRC is folded from its blocks in order at the end; blocks no link holds are
//! zero. A block that arrives in fragments (a read or a bundle boundary inside it) keeps its
//! fragments until the file is folded. When the fragments of a block do not cover it exactly
//! (which a correct plan never produces), the file is reported as unknown and read back instead.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::backup::incremental::BLCKSZ;

/// The CRC-32C polynomial, reflected.
const POLY: u32 = 0x82F6_3B78;

/// Multiplies `a` and `b` modulo the CRC polynomial (reflected bit order, `1 << 31` is 1).
fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m: u32 = 1 << 31;
    let mut p = 0u32;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
}

/// `x^(2^k)` modulo the polynomial, for k = 0..64.
fn x2n_table() -> &'static [u32; 64] {
    static T: OnceLock<[u32; 64]> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = [0u32; 64];
        let mut p: u32 = 1 << 30; // x^1
        for slot in t.iter_mut() {
            *slot = p;
            p = multmodp(p, p);
        }
        t
    })
}

/// `x^(8·n)` modulo the polynomial: the operator that appends `n` bytes to a CRC, so that
/// `crc(A ‖ B) = multmodp(x8nmodp(len(B)), crc(A)) ^ crc(B)` (as zlib's `crc32_combine`, and
/// cheap: one multiplication per bit of `n`).
fn x8nmodp(mut n: u64) -> u32 {
    let table = x2n_table();
    let mut k = 3;
    let mut p: u32 = 1 << 31; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = multmodp(table[k & 63], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The operator that appends one block to a CRC.
fn block_op() -> u32 {
    static OP: OnceLock<u32> = OnceLock::new();
    *OP.get_or_init(|| x8nmodp(BLCKSZ))
}

/// CRC-32C of a zero block (a hole).
fn zero_block_crc() -> u32 {
    static Z: OnceLock<u32> = OnceLock::new();
    *Z.get_or_init(|| crc32c::crc32c(&[0u8; BLCKSZ as usize]))
}

/// One output file's blocks.
#[derive(Debug)]
struct FileCrcs {
    /// CRC of each whole block written; `None` for blocks not (yet) written whole.
    blocks: Vec<Option<u32>>,
    /// Fragments of blocks written in parts: block -> (offset in block, length, CRC).
    parts: HashMap<u32, Vec<(u32, u32, u32)>>,
}

/// Per-block CRCs of the output files being reconstructed, shared by the unpacking threads.
#[derive(Debug, Default)]
pub struct BlockCrcs {
    files: HashMap<usize, Mutex<FileCrcs>>,
}

impl BlockCrcs {
    /// Tracks the output files `outputs` (index and length in bytes, a multiple of the block
    /// size).
    pub fn new(outputs: impl IntoIterator<Item = (usize, u64)>) -> Self {
        let files = outputs
            .into_iter()
            .map(|(i, len)| {
                let n = len.div_ceil(BLCKSZ) as usize;
                let f = FileCrcs {
                    blocks: vec![None; n],
                    parts: HashMap::new(),
                };
                (i, Mutex::new(f))
            })
            .collect();
        BlockCrcs { files }
    }

    /// Records `bytes` written at offset `to` of output `file`.
    pub fn record(&self, file: usize, to: u64, bytes: &[u8]) {
        let Some(f) = self.files.get(&file) else {
            return;
        };
        let Ok(mut f) = f.lock() else {
            return;
        };
        let (mut to, mut bytes) = (to, bytes);
        while !bytes.is_empty() {
            let block = to / BLCKSZ;
            let within = to % BLCKSZ;
            let n = ((BLCKSZ - within) as usize).min(bytes.len());
            let crc = crc32c::crc32c(&bytes[..n]);
            if within == 0 && n as u64 == BLCKSZ {
                if let Some(slot) = f.blocks.get_mut(block as usize) {
                    *slot = Some(crc);
                }
            } else if let Ok(b) = u32::try_from(block) {
                f.parts.entry(b).or_default().push((within as u32, n as u32, crc));
            }
            to += n as u64;
            bytes = &bytes[n..];
        }
    }

    /// The CRC-32C of output `file` as written (holes as zeros); `None` when the file is not
    /// tracked or a block's fragments do not cover it exactly.
    pub fn file_crc(&self, file: usize) -> Option<u32> {
        let f = self.files.get(&file)?.lock().ok()?;
        let op = block_op();
        let mut crc = 0u32;
        for (k, slot) in f.blocks.iter().enumerate() {
            let block = match (slot, f.parts.get(&(k as u32))) {
                (Some(c), None) => *c,
                (None, None) => zero_block_crc(),
                (None, Some(parts)) => join(parts)?,
                (Some(_), Some(_)) => return None,
            };
            crc = if k == 0 { block } else { multmodp(op, crc) ^ block };
        }
        Some(crc)
    }
}

/// A block's CRC from fragments that must cover it exactly, once.
fn join(parts: &[(u32, u32, u32)]) -> Option<u32> {
    let mut parts = parts.to_vec();
    parts.sort_unstable();
    let mut at = 0u32;
    let mut crc = 0u32;
    for (off, len, c) in parts {
        if off != at {
            return None;
        }
        crc = if at == 0 {
            c
        } else {
            multmodp(x8nmodp(len as u64), crc) ^ c
        };
        at += len;
    }
    (at as u64 == BLCKSZ).then_some(crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(blocks: usize, seed: u8) -> Vec<u8> {
        (0..blocks * BLCKSZ as usize)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
            .collect()
    }

    #[test]
    fn blocks_written_in_any_order_and_in_fragments_give_the_file_crc() {
        let content = data(5, 3);
        let mut expected = content.clone();
        // Block 3 is a hole: never written, zero in the file.
        expected[3 * BLCKSZ as usize..4 * BLCKSZ as usize].fill(0);
        let crcs = BlockCrcs::new([(7, expected.len() as u64)]);
        let b = BLCKSZ as usize;
        crcs.record(7, 4 * BLCKSZ, &content[4 * b..]);
        crcs.record(7, 0, &content[..b]);
        // Block 1 and the start of block 2 in one write, the rest of block 2 in two fragments
        // recorded out of order.
        crcs.record(7, BLCKSZ, &content[b..2 * b + 100]);
        crcs.record(7, 2 * BLCKSZ + 4000, &content[2 * b + 4000..3 * b]);
        crcs.record(7, 2 * BLCKSZ + 100, &content[2 * b + 100..2 * b + 4000]);
        assert_eq!(crcs.file_crc(7), Some(crc32c::crc32c(&expected)));
        assert_eq!(crcs.file_crc(8), None, "untracked");
    }

    #[test]
    fn a_block_with_a_missing_fragment_is_unknown_not_wrong() {
        let content = data(2, 9);
        let crcs = BlockCrcs::new([(0, content.len() as u64)]);
        crcs.record(0, 0, &content[..BLCKSZ as usize]);
        crcs.record(0, BLCKSZ, &content[BLCKSZ as usize..BLCKSZ as usize + 10]);
        assert_eq!(crcs.file_crc(0), None);
    }

    #[test]
    fn appending_any_length_agrees_with_the_crate() {
        let a = data(1, 4);
        for len in [1usize, 7, 100, 4096, 8191, 8192] {
            let b = &data(1, 5)[..len];
            let ours = multmodp(x8nmodp(len as u64), crc32c::crc32c(&a)) ^ crc32c::crc32c(b);
            assert_eq!(ours, crc32c::crc32c_combine(crc32c::crc32c(&a), crc32c::crc32c(b), len));
            assert_eq!(ours, crc32c::crc32c(&[a.as_slice(), b].concat()));
        }
    }

    #[test]
    fn the_block_operator_appends_a_block() {
        let a = data(1, 1);
        let b = data(1, 2);
        let whole = [a.clone(), b.clone()].concat();
        assert_eq!(
            multmodp(block_op(), crc32c::crc32c(&a)) ^ crc32c::crc32c(&b),
            crc32c::crc32c(&whole)
        );
    }
}
