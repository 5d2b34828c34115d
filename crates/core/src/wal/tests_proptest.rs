//! Property tests of the segment walk: synthetic segments written the way PostgreSQL lays records
//! out (page headers, records and record headers split across pages, a continuation from the
//! previous segment, a record running off the end) are summarized exactly; random and mutated
//! segments never panic, and a mutated restore point is never reported. Fixed seeds (proptest's
//! deterministic runner), bounded case counts.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::*;

const BLOCK: usize = 8192;
const SEG: usize = 64 * 1024;
const MAGIC: u16 = 0xD110;
const SYSID: u64 = 7_000_000_000_000_000_001;

fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

/// One record to write.
#[derive(Clone, Debug)]
enum Rec {
    Commit(i64),
    Abort(i64),
    RestorePoint(String, i64),
    /// A heap-like record: block references and this many bytes of payload.
    Filler {
        blocks: u8,
        payload: usize,
    },
    /// `XLOG_END_OF_RECOVERY` starting timeline `to` (from 1).
    EndOfRecovery(u32),
}

fn record_bytes(rec: &Rec, prev: u64) -> Vec<u8> {
    let (rmid, info, main, blocks, payload) = match rec {
        Rec::Commit(t) => (
            1u8,
            0x00u8,
            t.to_le_bytes().iter().chain(&[0u8; 4]).copied().collect(),
            0,
            0,
        ),
        Rec::Abort(t) => (1, 0x20, t.to_le_bytes().to_vec(), 0, 0),
        Rec::RestorePoint(n, t) => {
            let mut m = t.to_le_bytes().to_vec();
            let mut name = [0u8; 64];
            name[..n.len()].copy_from_slice(n.as_bytes());
            m.extend_from_slice(&name);
            (0, 0x70, m, 0, 0)
        }
        Rec::Filler { blocks, payload } => (10, 0x00, vec![9u8; 3], *blocks, *payload),
        Rec::EndOfRecovery(to) => {
            let m = [
                &7i64.to_le_bytes()[..],
                &to.to_le_bytes(),
                &1u32.to_le_bytes(),
                &[1, 0, 0, 0],
            ];
            (0, 0x90, m.concat(), 0, 0)
        }
    };
    let mut body = Vec::new();
    let per_block = if blocks > 0 { payload / usize::from(blocks) } else { 0 };
    for b in 0..blocks {
        body.push(b);
        body.push(0x20 | if b > 0 { 0x80 } else { 0 });
        body.extend_from_slice(&(per_block as u16).to_le_bytes());
        if b == 0 {
            body.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
        }
        body.extend_from_slice(&u32::from(b).to_le_bytes());
    }
    let mut image = Vec::new();
    if let Rec::Abort(_) = rec {
        // A block reference with a compressed page image that has a hole (15+ flags: the
        // hole length follows), then 5 bytes of block data: exercises the block-header walk.
        body.extend_from_slice(&[0, 0x10 | 0x20, 5, 0, 100, 0, 10, 0, 0x01 | 0x04, 0x20, 0]);
        body.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0]);
        image = vec![0xEE; 105];
    }
    if let Rec::Commit(_) = rec {
        // A replication origin, as a commit replayed by logical replication carries.
        body.extend_from_slice(&[253, 1, 0]);
    }
    if main.len() < 256 {
        body.extend_from_slice(&[255, main.len() as u8]);
    } else {
        body.push(254);
        body.extend_from_slice(&(main.len() as u32).to_le_bytes());
    }
    body.extend(std::iter::repeat_n(0xAB, per_block * usize::from(blocks)));
    body.extend_from_slice(&image);
    body.extend_from_slice(&main);
    let tot = 24 + body.len();
    let mut r = Vec::with_capacity(tot);
    r.extend_from_slice(&(tot as u32).to_le_bytes());
    r.extend_from_slice(&1234u32.to_le_bytes());
    r.extend_from_slice(&prev.to_le_bytes());
    r.extend_from_slice(&[info, rmid, 0, 0]);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&body), &r[..20]);
    r.extend_from_slice(&crc.to_le_bytes());
    r.extend_from_slice(&body);
    r
}

/// Lays records into one segment as XLogInsert does; returns the segment and the records that
/// fit entirely (with their LSNs).
fn write_segment(seg_no: u64, cont: usize, recs: &[Rec]) -> (Vec<u8>, Vec<(Lsn, Rec)>) {
    let start = seg_no * SEG as u64;
    let mut d = vec![0u8; SEG];
    let header = |d: &mut Vec<u8>, p: usize, rem: usize| {
        let long = p == 0;
        let info: u16 = if rem > 0 { 1 } else { 0 } | if long { 2 } else { 0 };
        d[p..p + 2].copy_from_slice(&MAGIC.to_le_bytes());
        d[p + 2..p + 4].copy_from_slice(&info.to_le_bytes());
        d[p + 4..p + 8].copy_from_slice(&1u32.to_le_bytes());
        d[p + 8..p + 16].copy_from_slice(&(start + p as u64).to_le_bytes());
        d[p + 16..p + 20].copy_from_slice(&(rem as u32).to_le_bytes());
        if long {
            d[24..32].copy_from_slice(&SYSID.to_le_bytes());
            d[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
            d[36..40].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        }
        p + if long { 40 } else { 24 }
    };
    // Writes `bytes` from `pos` across pages; `None` if they run off the segment.
    let put = |d: &mut Vec<u8>, mut pos: usize, bytes: &[u8], contrecord: bool| -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            if pos % BLOCK == 0 {
                if pos >= SEG {
                    return None;
                }
                pos = header(d, pos, if contrecord || i > 0 { bytes.len() - i } else { 0 });
            }
            let n = (BLOCK - pos % BLOCK).min(bytes.len() - i);
            d[pos..pos + n].copy_from_slice(&bytes[i..i + n]);
            pos += n;
            i += n;
        }
        Some(pos)
    };
    let mut pos = if cont > 0 {
        put(&mut d, 0, &vec![0xCD; cont], true)
    } else {
        Some(header(&mut d, 0, 0))
    };
    let mut prev = start.saturating_sub(200);
    let mut written = Vec::new();
    for rec in recs {
        let Some(p) = pos else { break };
        let mut p = (p + 7) & !7;
        if p % BLOCK == 0 && p < SEG {
            p = header(&mut d, p, 0);
        }
        let lsn = start + p as u64;
        pos = put(&mut d, p, &record_bytes(rec, prev), false);
        if pos.is_some() {
            written.push((Lsn(lsn), rec.clone()));
        }
        prev = lsn;
    }
    (d, written)
}

fn rec_strategy() -> impl Strategy<Value = Rec> {
    let t = 0i64..2_000_000_000_000_000;
    prop_oneof![
        t.clone().prop_map(Rec::Commit),
        t.clone().prop_map(Rec::Abort),
        ("[a-z_]{1,63}", t).prop_map(|(n, t)| Rec::RestorePoint(n, t)),
        (0u8..4, 0usize..20_000).prop_map(|(blocks, payload)| Rec::Filler { blocks, payload }),
        (0u8..2, 0usize..200).prop_map(|(blocks, payload)| Rec::Filler { blocks, payload }),
    ]
}

fn time(us: i64) -> DateTime<Utc> {
    records::pg_timestamp(us).unwrap()
}

#[test]
fn synthetic_segments_are_read_exactly() {
    let strategy = (0usize..30_000, prop::collection::vec(rec_strategy(), 0..60));
    runner(200)
        .run(&strategy, |(cont, recs)| {
            let (seg, written) = write_segment(5, cont, &recs);
            let name = WalFileName::from_segment_number(1, 5, SEG as u64);
            let s = summarize_segment(&name, &seg, SEG as u64, 15);
            prop_assert!(s.complete, "{:?}", s.stopped);
            prop_assert_eq!(s.records, written.len() as u64);
            let times: Vec<_> = written
                .iter()
                .filter_map(|(_, r)| match r {
                    Rec::Commit(t) | Rec::Abort(t) => Some(time(*t)),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(s.first_commit, times.iter().min().copied());
            prop_assert_eq!(s.last_commit, times.iter().max().copied());
            let rps: Vec<_> = written
                .iter()
                .filter_map(|(lsn, r)| match r {
                    Rec::RestorePoint(n, t) => Some(RestorePointRecord {
                        name: n.clone(),
                        lsn: *lsn,
                        time: time(*t),
                    }),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(&s.restore_points, &rps);
            check_segment(&name, &seg, SYSID, SEG as u64, 15).unwrap();
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_bytes_never_panic() {
    let strategy = (prop::collection::vec(any::<u8>(), 0..3 * BLOCK), any::<bool>());
    runner(300)
        .run(&strategy, |(mut bytes, plausible)| {
            let name = WalFileName::from_segment_number(1, 5, SEG as u64);
            if plausible && bytes.len() >= 40 {
                // A valid long header in front of random bytes reaches the record walk.
                let (head, _) = write_segment(5, 0, &[]);
                bytes[..40].copy_from_slice(&head[..40]);
            }
            let s = summarize_segment(&name, &bytes, SEG as u64, 15);
            prop_assert!(s.records < 1000);
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_segments_never_report_a_mutated_restore_point() {
    let recs: Vec<Rec> = (0..40)
        .map(|i| match i % 4 {
            0 => Rec::Commit(800_000_000_000_000 + i),
            1 => Rec::RestorePoint(format!("point_{i}"), 800_000_000_000_000 + i),
            2 => Rec::Filler {
                blocks: 2,
                payload: 3000 + i as usize * 37,
            },
            _ => Rec::Abort(800_000_000_000_000 + i),
        })
        .collect();
    let (seg, written) = write_segment(5, 1000, &recs);
    let truth: Vec<(Lsn, String)> = written
        .iter()
        .filter_map(|(l, r)| {
            if let Rec::RestorePoint(n, _) = r {
                Some((*l, n.clone()))
            } else {
                None
            }
        })
        .collect();
    let name = WalFileName::from_segment_number(1, 5, SEG as u64);
    let strategy = (prop::collection::vec((0usize..SEG, any::<u8>()), 1..8), 0usize..=SEG);
    runner(300)
        .run(&strategy, |(flips, len)| {
            let mut bad = seg.clone();
            for (at, x) in flips {
                bad[at] ^= x | 1;
            }
            let s = summarize_segment(&name, &bad[..len], SEG as u64, 15);
            for rp in &s.restore_points {
                prop_assert!(
                    truth.iter().any(|(l, n)| *l == rp.lsn && *n == rp.name),
                    "accepted {rp:?}"
                );
            }
            prop_assert!(s.records <= written.len() as u64);
            Ok(())
        })
        .unwrap();
}

#[test]
fn an_overwritten_contrecord_is_skipped() {
    // A record torn at a crash, which PostgreSQL 15+ marks on the next page with
    // XLP_FIRST_IS_OVERWRITE_CONTRECORD and writes over: the walk resumes after it.
    let (mut seg, written) = write_segment(
        5,
        0,
        &[Rec::Filler {
            blocks: 1,
            payload: 9000,
        }],
    );
    assert_eq!(written.len(), 1);
    let torn = written[0].0;
    seg[BLOCK..].fill(0);
    let (page, _) = write_segment(5, 0, &[]);
    seg[BLOCK..BLOCK + 24].copy_from_slice(&page[..24]);
    seg[BLOCK + 2..BLOCK + 4].copy_from_slice(&0x0008u16.to_le_bytes());
    seg[BLOCK + 8..BLOCK + 16].copy_from_slice(&(torn.0 - torn.0 % SEG as u64 + BLOCK as u64).to_le_bytes());
    let commit = record_bytes(&Rec::Commit(5_000_000), torn.0);
    seg[BLOCK + 24..BLOCK + 24 + commit.len()].copy_from_slice(&commit);
    let name = WalFileName::from_segment_number(1, 5, SEG as u64);
    let s = summarize_segment(&name, &seg, SEG as u64, 15);
    assert!(s.complete, "{s:?}");
    assert_eq!((s.records, s.first_commit), (1, Some(time(5_000_000))));
}

#[test]
fn a_broken_prev_link_ends_the_walk() {
    let recs = [Rec::Commit(1), Rec::Commit(2), Rec::Commit(3)];
    let (mut seg, written) = write_segment(5, 0, &recs);
    // Re-link the third record to the first, with a valid CRC: xl_prev alone must stop it.
    let at = (written[2].0 .0 % SEG as u64) as usize;
    let bad = record_bytes(&recs[2], written[0].0 .0);
    seg[at..at + bad.len()].copy_from_slice(&bad);
    let name = WalFileName::from_segment_number(1, 5, SEG as u64);
    let s = summarize_segment(&name, &seg, SEG as u64, 15);
    assert!(!s.complete && s.records == 2, "{s:?}");
    assert_eq!(s.last_commit, Some(time(2)));
}

#[test]
fn a_record_cut_by_an_empty_page_is_not_the_end_of_wal() {
    let (mut seg, written) = write_segment(
        5,
        0,
        &[
            Rec::Commit(1),
            Rec::Filler {
                blocks: 1,
                payload: 9000,
            },
        ],
    );
    assert_eq!(written.len(), 2);
    seg[BLOCK..2 * BLOCK].fill(0);
    let name = WalFileName::from_segment_number(1, 5, SEG as u64);
    let s = summarize_segment(&name, &seg, SEG as u64, 15);
    assert!(!s.complete && s.records == 1, "{s:?}");
    // The same record running off the end of a short file is the end of what there is.
    let (seg, _) = write_segment(
        5,
        0,
        &[
            Rec::Commit(1),
            Rec::Filler {
                blocks: 1,
                payload: 9000,
            },
        ],
    );
    let s = summarize_segment(&name, &seg[..BLOCK], SEG as u64, 15);
    assert!(s.complete && s.records == 1, "{s:?}");
}

#[test]
fn a_timeline_start_cut_by_the_segment_end_still_counts() {
    // The first segment of timeline 2 keeps timeline 1's pages; when its end-of-recovery record
    // starts in the last bytes, only its header is here. A commit there proves nothing.
    let name = WalFileName::from_segment_number(2, 5, SEG as u64);
    for last in [Rec::EndOfRecovery(2), Rec::Commit(1)] {
        let seg = (40_000..SEG)
            .step_by(8)
            .map(|p| write_segment(5, 0, &[Rec::Filler { blocks: 1, payload: p }, last.clone()]))
            .find(|(seg, written)| {
                written.len() == 1 && records::summarize_with_tail(&name, seg, SEG as u64, 15).1.is_some()
            })
            .expect("a filler length that leaves the last record's header at the end")
            .0;
        let result = check_segment(&name, &seg, SYSID, SEG as u64, 15);
        match last {
            Rec::EndOfRecovery(_) => result.unwrap(),
            _ => assert!(matches!(result, Err(WalError::Foreign { .. })), "{result:?}"),
        }
    }
    // A whole end-of-recovery record to another timeline is no evidence for this one.
    let (seg, _) = write_segment(5, 0, &[Rec::EndOfRecovery(3)]);
    assert!(check_segment(&name, &seg, SYSID, SEG as u64, 15).is_err());
    let (seg, _) = write_segment(5, 0, &[Rec::EndOfRecovery(2)]);
    check_segment(&name, &seg, SYSID, SEG as u64, 15).unwrap();
}
