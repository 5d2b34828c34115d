//! Restoring a chain of incremental backups in one pass (no intermediate data directories).
//!
//! The result is what `pg_combinebackup` would produce, decided from the catalogs alone before
//! a byte is read: the set of files is the newest backup's (`INCREMENTAL.` prefixes dropped); a
//! file's length follows the newest link's `truncation_block_length` (extended to the blocks it
//! holds); each block comes from the newest link that has it, and a link's blocks at or past the
//! truncation length of any newer link are ignored (the relation was truncated after it). The
//! walk stops at the first link holding the file whole. Since every output block has exactly one
//! source, the links' bundles can be unpacked in any order and in parallel: each source file
//! gets a [`SourceMap`] saying which of its bytes go where, and everything else is skipped as it
//! streams past. Blocks no link holds stay zero (sparse), as in `pg_combinebackup`.

use std::collections::HashMap;

use crate::backup::incremental::{strip_prefix, BLCKSZ};
use crate::repository::catalog::{BackupCatalog, FileEntry};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("backup {child} depends on backup {parent}, which is not in the repository (expired or removed by hand); the chain cannot be restored — restore an older full backup")]
    MissingParent { child: String, parent: String },
    #[error("backup {0} is incremental but the chain below it never reaches a full backup")]
    NoFull(String),
    #[error("{path}: incremental in backup {newer} but absent from its parent {older}; the chain is damaged")]
    MissingFile { path: String, newer: String, older: String },
    #[error("{path} in backup {backup}: the catalog's incremental header disagrees with the file's size")]
    BadEntry { path: String, backup: String },
}

/// Which bytes of one stored file are written, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceMap {
    /// Bytes before the first block (the incremental header); 0 for a whole file.
    pub header_len: u64,
    /// Block numbers of the stored blocks in order; `None` for a whole file (block `k` is `k`).
    pub blocks: Option<Vec<u32>>,
    /// Output blocks taken from this source; `None`: every byte (a file taken whole).
    pub take: Option<Vec<bool>>,
}

impl SourceMap {
    /// Where source byte `off` goes in the output file, and how many bytes from there on belong
    /// to the same run (the rest of the block); `None` with the skip length for bytes not taken.
    pub fn locate(&self, off: u64) -> (Option<u64>, u64) {
        self.locate_run(off, 0)
    }

    /// As [`SourceMap::locate`], but the run goes on over following blocks while they stay
    /// contiguous in the output (or all skipped), up to at least `want` bytes when possible, so
    /// that a caller writes (or skips) a long run with one call instead of one per block.
    pub fn locate_run(&self, off: u64, want: u64) -> (Option<u64>, u64) {
        let Some(take) = &self.take else {
            return (Some(off), u64::MAX);
        };
        if off < self.header_len {
            return (None, self.header_len - off);
        }
        let rel = off - self.header_len;
        let k = rel / BLCKSZ;
        let within = rel % BLCKSZ;
        let mut run = BLCKSZ - within;
        let Some(block) = self.block_at(k) else {
            return (None, u64::MAX);
        };
        let taken = take.get(block as usize) == Some(&true);
        let mut next = k + 1;
        while run < want {
            match self.block_at(next) {
                Some(b) if (take.get(b as usize) == Some(&true)) == taken && (!taken || b == block + (next - k)) => {
                    run += BLCKSZ;
                    next += 1;
                }
                _ => break,
            }
        }
        if taken {
            (Some(block * BLCKSZ + within), run)
        } else {
            (None, run)
        }
    }

    /// The output block the `k`-th stored block is; `None` past the stored blocks.
    fn block_at(&self, k: u64) -> Option<u64> {
        match &self.blocks {
            Some(list) => list.get(k as usize).map(|b| *b as u64),
            None => Some(k),
        }
    }
}

/// One stored file feeding one output file.
#[derive(Clone, Debug)]
pub struct Source {
    /// Index of the link (0 = newest) the stored file belongs to.
    pub link: usize,
    pub file: FileEntry,
    /// Index of the output file.
    pub output: usize,
    pub map: SourceMap,
}

/// The combined restore of a chain: the output files (newest link's, renamed, with their final
/// sizes) and where their bytes come from.
#[derive(Clone, Debug)]
pub struct Combined {
    pub files: Vec<FileEntry>,
    pub sources: Vec<Source>,
}

/// Plans the combination of `links` (newest first, ending with a full backup).
pub fn combine(links: &[BackupCatalog]) -> Result<Combined, ChainError> {
    let newest = links.first().ok_or_else(|| ChainError::NoFull(String::new()))?;
    let index: Vec<HashMap<&str, &FileEntry>> = links
        .iter()
        .map(|c| c.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .collect();
    let mut files = Vec::with_capacity(newest.files.len());
    let mut sources = Vec::new();
    for f in &newest.files {
        let output = files.len();
        let Some(info) = &f.incremental else {
            files.push(FileEntry {
                incremental: None,
                ..f.clone()
            });
            sources.push(Source {
                link: 0,
                file: f.clone(),
                output,
                map: SourceMap {
                    header_len: 0,
                    blocks: None,
                    take: None,
                },
            });
            continue;
        };
        let path = strip_prefix(&f.path).ok_or_else(|| bad(f, newest))?;
        let incr_name = f.path.clone();
        let len_blocks = info
            .blocks
            .iter()
            .map(|b| b + 1)
            .max()
            .unwrap_or(0)
            .max(info.truncation_block_length) as usize;
        let mut taken = vec![false; len_blocks];
        let mut limit = info.truncation_block_length as usize;
        let mut reached_full = false;
        for (k, cat) in links.iter().enumerate() {
            let entry = if k == 0 {
                f
            } else if let Some(e) = index[k].get(incr_name.as_str()).or_else(|| index[k].get(path.as_str())) {
                e
            } else {
                return Err(ChainError::MissingFile {
                    path,
                    newer: links[k - 1].id.clone(),
                    older: cat.id.clone(),
                });
            };
            let mut take = vec![false; len_blocks];
            let mut any = false;
            match &entry.incremental {
                Some(inc) => {
                    for &b in &inc.blocks {
                        let b = b as usize;
                        // The newest link's own blocks are all taken; older ones only below
                        // every newer truncation length.
                        if (k == 0 || b < limit) && b < len_blocks && !taken[b] {
                            take[b] = true;
                            taken[b] = true;
                            any = true;
                        }
                    }
                    if k > 0 {
                        limit = limit.min(inc.truncation_block_length as usize);
                    }
                }
                None => {
                    let have = entry.size.div_ceil(BLCKSZ) as usize;
                    for b in 0..have.min(limit).min(len_blocks) {
                        if !taken[b] {
                            take[b] = true;
                            taken[b] = true;
                            any = true;
                        }
                    }
                    reached_full = true;
                }
            }
            if any {
                sources.push(Source {
                    link: k,
                    file: entry.clone(),
                    output,
                    map: SourceMap {
                        header_len: entry.incremental.as_ref().map_or(0, |i| i.header_len),
                        blocks: entry.incremental.as_ref().map(|i| i.blocks.clone()),
                        take: Some(take),
                    },
                });
            }
            if reached_full {
                break;
            }
        }
        if !reached_full {
            return Err(ChainError::NoFull(newest.id.clone()));
        }
        files.push(FileEntry {
            path,
            size: len_blocks as u64 * BLCKSZ,
            mode: f.mode,
            mtime: f.mtime,
            pieces: Vec::new(),
            incremental: None,
        });
    }
    Ok(Combined { files, sources })
}

fn bad(f: &FileEntry, cat: &BackupCatalog) -> ChainError {
    ChainError::BadEntry {
        path: f.path.clone(),
        backup: cat.id.clone(),
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
