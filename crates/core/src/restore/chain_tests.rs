//! The chain combination against a model of how PostgreSQL changes one relation segment and
//! what its incremental files then hold: restoring the newest link must give the segment as it
//! was at that backup, block for block.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use super::*;
use crate::backup::incremental::padded_header_len;
use crate::repository::catalog::{BackupKind, IncrementalInfo};
use crate::restore::blockcrc::BlockCrcs;

const PATH: &str = "base/5/16384";

/// What happens to the segment between two backups.
#[derive(Clone, Debug)]
enum Op {
    Write(usize),
    Extend(usize),
    Truncate(usize),
}

fn catalog(id: &str, files: Vec<FileEntry>) -> BackupCatalog {
    let mut c: BackupCatalog = serde_json::from_value(serde_json::json!({
        "catalog_version": 1, "id": id, "label": "l", "kind": "full", "pgvault_version": "0",
        "system_identifier": "1", "pg_version_num": 170000, "timeline": 1, "start_lsn": "0/1000000",
        "stop_lsn": "0/2000000", "stop_timeline": 1, "start_wal": "000000010000000000000001",
        "stop_wal": "000000010000000000000002", "start_time": "2026-01-01T00:00:00Z",
        "stop_time": "2026-01-01T00:00:01Z", "wal_included": false, "snapshot_after_stop": null,
        "size": 0, "stored_size": 0, "compression": "zstd", "encrypted": false, "owner_uid": null,
        "owner_gid": null, "tablespaces": [], "bundles": [], "directories": [], "symlinks": [],
        "files": [], "manifest_sha256": null
    }))
    .unwrap();
    c.files = files;
    c
}

fn entry(path: &str, size: u64, incremental: Option<IncrementalInfo>) -> FileEntry {
    FileEntry {
        path: path.to_string(),
        size,
        mode: 0o600,
        mtime: 0,
        pieces: Vec::new(),
        incremental,
    }
}

/// Runs the history; returns the links (newest first), each link's stored bytes, and the segment
/// as it was at the newest backup.
fn history(steps: &[Vec<Op>], initial: usize) -> (Vec<BackupCatalog>, Vec<Vec<u8>>, Vec<u8>) {
    let mut version = 1u8;
    let mut seg: Vec<u8> = (0..initial).map(|_| 1).collect();
    let block = |v: u8| vec![v; BLCKSZ as usize];
    let mut links = vec![catalog("0F", vec![entry(PATH, initial as u64 * BLCKSZ, None)])];
    let mut stored = vec![seg.iter().flat_map(|v| block(*v)).collect::<Vec<u8>>()];
    for (n, ops) in steps.iter().enumerate() {
        let mut modified = std::collections::BTreeSet::new();
        let mut limit: Option<usize> = None;
        for op in ops {
            version = version.wrapping_add(1).max(2);
            match *op {
                Op::Write(b) if b < seg.len() => {
                    seg[b] = version;
                    modified.insert(b);
                }
                Op::Extend(k) => {
                    for _ in 0..k {
                        modified.insert(seg.len());
                        seg.push(version);
                    }
                }
                Op::Truncate(t) if t < seg.len() => {
                    seg.truncate(t);
                    limit = Some(limit.map_or(t, |l| l.min(t)));
                }
                _ => {}
            }
        }
        let size = seg.len();
        let mut blocks: std::collections::BTreeSet<usize> = modified.into_iter().filter(|b| *b < size).collect();
        if let Some(l) = limit {
            blocks.extend(l..size);
        }
        let blocks: Vec<u32> = blocks.into_iter().map(|b| b as u32).collect();
        let header_len = padded_header_len(blocks.len() as u32);
        let mut bytes = vec![0u8; header_len as usize];
        for b in &blocks {
            bytes.extend(block(seg[*b as usize]));
        }
        let info = IncrementalInfo {
            truncation_block_length: size as u32,
            blocks,
            header_len,
        };
        let mut c = catalog(
            &format!("{}I", n + 1),
            vec![entry("base/5/INCREMENTAL.16384", bytes.len() as u64, Some(info))],
        );
        c.kind = BackupKind::Incr;
        links.insert(0, c);
        stored.insert(0, bytes);
    }
    let expected = seg.iter().flat_map(|v| block(*v)).collect();
    (links, stored, expected)
}

/// Writes every source's bytes where its map sends them, as the unpacker does: the stored file
/// arrives in reads of `chunk` bytes, each written in runs, every run's CRC recorded. Returns the
/// output and the CRC folded from the blocks.
fn materialize(c: &Combined, stored: &[Vec<u8>], chunk: usize) -> (Vec<u8>, Option<u32>) {
    let mut out = vec![0u8; c.files[0].size as usize];
    let crcs = BlockCrcs::new([(0, c.files[0].size)]);
    for s in &c.sources {
        let data = &stored[s.link];
        for (i, piece) in data.chunks(chunk).enumerate() {
            let mut off = (i * chunk) as u64;
            let end = off + piece.len() as u64;
            while off < end {
                let (to, run) = s.map.locate_run(off, end - off);
                let run = run.min(end - off);
                if let Some(to) = to {
                    let bytes = &data[off as usize..(off + run) as usize];
                    out[to as usize..(to + run) as usize].copy_from_slice(bytes);
                    crcs.record(0, to, bytes);
                }
                off += run;
            }
        }
    }
    (out, crcs.file_crc(0))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..14).prop_map(Op::Write),
        1 => (1usize..4).prop_map(Op::Extend),
        1 => (0usize..10).prop_map(Op::Truncate),
    ]
}

#[test]
fn a_chain_restores_the_newest_state_of_every_block() {
    let mut runner = TestRunner::new(Config {
        cases: 300,
        rng_seed: RngSeed::Fixed(0x0063_6861_696e),
        failure_persistence: None,
        ..Config::default()
    });
    // Reads as large as whole stored files, or small and unaligned to blocks.
    let chunk = prop_oneof![Just(usize::MAX), 1000usize..40_000];
    let strategy = (
        0usize..12,
        proptest::collection::vec(proptest::collection::vec(op(), 0..6), 0..5),
        chunk,
    );
    runner
        .run(&strategy, |(initial, steps, chunk)| {
            let (links, stored, expected) = history(&steps, initial);
            let c = combine(&links).unwrap();
            prop_assert_eq!(c.files.len(), 1);
            prop_assert_eq!(&c.files[0].path, PATH);
            prop_assert_eq!(c.files[0].size as usize, expected.len());
            let (out, crc) = materialize(&c, &stored, chunk);
            prop_assert!(out == expected, "content differs");
            prop_assert_eq!(crc, Some(crc32c::crc32c(&expected)), "the CRC folded from the blocks");
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_file_dropped_between_links_does_not_come_back_and_a_broken_chain_is_refused() {
    let full = catalog("0F", vec![entry("a", BLCKSZ, None), entry("b", BLCKSZ, None)]);
    let info = IncrementalInfo {
        truncation_block_length: 1,
        blocks: vec![],
        header_len: 12,
    };
    let incr = catalog("1I", vec![entry("INCREMENTAL.a", 12, Some(info.clone()))]);
    let c = combine(&[incr.clone(), full]).unwrap();
    assert_eq!(c.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(
        c.sources.len(),
        1,
        "only the full file's block, none from the empty increment"
    );
    assert!(matches!(
        combine(std::slice::from_ref(&incr)),
        Err(ChainError::NoFull(_))
    ));
    let other = catalog("0F", vec![entry("b", BLCKSZ, None)]);
    assert!(matches!(combine(&[incr, other]), Err(ChainError::MissingFile { .. })));
}
