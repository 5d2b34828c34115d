//! Property tests: random timeline trees, random archived sets and random backups; random and
//! mutated history files. Fixed seed and bounded cases, so a run is repeatable and takes seconds.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use super::*;
use crate::timeline::{parse_history, HistoryEntry, ModelTarget};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7067_7661_756c_7421),
        failure_persistence: None,
        ..Config::default()
    })
}

/// A random archive: up to 6 timelines, each branching from a lower one somewhere after that
/// one began; segments 0..40 of each timeline present at random; up to 4 backups.
#[derive(Clone, Debug)]
struct Synthetic {
    histories: Vec<(TimelineId, Vec<HistoryEntry>)>,
    segments: Vec<WalFileName>,
    backups: Vec<BackupPoint>,
}

fn synthetic() -> impl Strategy<Value = Synthetic> {
    synthetic_with(0.5, 4)
}

/// Like [`synthetic`], with each segment present with probability `present` and up to
/// `max_backups` backups (dense archives put many backups in one window).
fn synthetic_with(present: f64, max_backups: usize) -> impl Strategy<Value = Synthetic> {
    let branches = prop::collection::vec((any::<prop::sample::Index>(), 0u64..(12 * MB16)), 0..5);
    let present = prop::collection::vec(prop::collection::vec(prop::bool::weighted(present), 40), 6);
    let backups = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            0u64..(30 * MB16),
            1u64..(3 * MB16),
            any::<bool>(),
        ),
        0..max_backups,
    );
    (branches, present, backups).prop_map(|(branches, present, raw_backups)| {
        let mut histories: Vec<(TimelineId, Vec<HistoryEntry>)> = Vec::new();
        let mut begins: Vec<Lsn> = vec![Lsn(0)];
        for (i, (parent_ix, offset)) in branches.into_iter().enumerate() {
            let tli = i as TimelineId + 2;
            let parent = parent_ix.index(tli as usize - 1) as TimelineId + 1;
            let parent_begin = begins[parent as usize - 1];
            let switch = Lsn(parent_begin.0 + offset + 1);
            let mut entries = histories
                .iter()
                .find(|(t, _)| *t == parent)
                .map(|(_, h)| h.clone())
                .unwrap_or_default();
            entries.push(HistoryEntry {
                parent,
                switch_lsn: switch,
                reason: String::new(),
            });
            histories.push((tli, entries));
            begins.push(switch);
        }
        let timelines = begins.len();
        let mut segments = Vec::new();
        for (t, row) in present.iter().take(timelines).enumerate() {
            let begin_seg = begins[t].segment(MB16);
            for (s, here) in row.iter().enumerate() {
                if *here && s as u64 >= begin_seg {
                    segments.push(seg(t as TimelineId + 1, s as u64));
                }
            }
        }
        let backups = raw_backups
            .into_iter()
            .enumerate()
            .map(|(i, (tli_ix, start, len, wal_included))| {
                let tli = tli_ix.index(timelines) as TimelineId + 1;
                let start = Lsn(begins[tli as usize - 1].0 + start);
                BackupPoint {
                    id: format!("b{i}"),
                    start_tli: tli,
                    start_lsn: start,
                    stop_tli: tli,
                    stop_lsn: Lsn(start.0 + len),
                    stop_time: at(i as i64),
                    wal_included,
                }
            })
            .collect();
        Synthetic {
            histories,
            segments,
            backups,
        }
    })
}

/// The file PostgreSQL reads for segment `n` along `target`, computed from the raw generated
/// history (not from the tree): the newest timeline of the history beginning at or before `n`.
fn oracle(s: &Synthetic, target: TimelineId, n: u64) -> WalFileName {
    let mut spans = Vec::new();
    let mut begin = Lsn(0);
    for e in history_of(s, target) {
        spans.push((e.parent, begin));
        begin = e.switch_lsn;
    }
    spans.push((target, begin));
    let tli = spans
        .iter()
        .rev()
        .find(|(_, b)| b.segment(MB16) <= n)
        .map_or(1, |(t, _)| *t);
    seg(tli, n)
}

fn history_of(s: &Synthetic, target: TimelineId) -> Vec<HistoryEntry> {
    s.histories
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, h)| h.clone())
        .unwrap_or_default()
}

/// Whether position `(tli, lsn)` is on `target`'s history (`end`: an end position, which may
/// equal the switch point), from the raw generated history.
fn oracle_on_path(s: &Synthetic, target: TimelineId, tli: TimelineId, lsn: Lsn, end: bool) -> bool {
    let mut begin = Lsn(0);
    for e in history_of(s, target) {
        if e.parent == tli {
            return begin <= lsn && (lsn < e.switch_lsn || (end && lsn == e.switch_lsn));
        }
        begin = e.switch_lsn;
    }
    tli == target && begin <= lsn
}

fn archived(s: &Synthetic, name: &WalFileName) -> bool {
    s.segments.contains(name)
}

fn build(s: &Synthetic) -> ArchiveModel {
    let tree = TimelineTree::from_histories(s.histories.clone()).expect("histories agree");
    ArchiveModel::new(MB16, tree, s.segments.clone(), s.backups.clone(), HashMap::new()).expect("valid model")
}

fn check_plan(
    s: &Synthetic,
    m: &ArchiveModel,
    b: &BackupPoint,
    target: TimelineId,
    until: Option<Lsn>,
) -> Result<(), TestCaseError> {
    let p = m.plan_recovery(b, target, until);
    let on_path = oracle_on_path(s, target, b.start_tli, b.start_lsn, false)
        && oracle_on_path(s, target, b.stop_tli, b.stop_lsn, true);
    prop_assert_eq!(p.backup_on_path, on_path);
    for (i, name) in p.segments.iter().enumerate() {
        prop_assert!(archived(s, name), "{name} is not archived");
        let n = name.segment_number(MB16);
        prop_assert_eq!(*name, oracle(s, target, n));
        if i > 0 {
            prop_assert_eq!(p.segments[i - 1].segment_number(MB16) + 1, n);
        }
    }
    if let Some(missing) = p.first_missing {
        prop_assert!(!archived(s, &missing));
        prop_assert_eq!(missing, oracle(s, target, missing.segment_number(MB16)));
    }
    if on_path && p.reaches_consistency {
        prop_assert!(p.reachable_end >= b.stop_lsn);
    }
    if until.is_none() && on_path && p.reaches_consistency {
        // The run goes as far as the archive allows; a gap means recovery would read something
        // beyond the missing segment.
        let next = match p.segments.last() {
            Some(last) => last.segment_number(MB16) + 1,
            None => b.first_archive_segno(MB16),
        };
        prop_assert!(!archived(s, &oracle(s, target, next)), "stopped early at {}", next);
        let beyond = (next + 1..50).any(|n| archived(s, &oracle(s, target, n)));
        prop_assert_eq!(p.gap_ahead, beyond);
    }
    Ok(())
}

#[test]
fn plans_read_only_archived_segments_in_order() {
    runner(300)
        .run(&synthetic(), |s| {
            let m = build(&s);
            for target in m.tree().timelines() {
                for b in m.backups() {
                    for until in [None, Some(Lsn(b.stop_lsn.0 + 5 * MB16))] {
                        check_plan(&s, &m, b, target, until)?;
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn windows_never_cover_a_missing_segment() {
    runner(300)
        .run(&synthetic(), |s| {
            let m = build(&s);
            for target in m.tree().timelines() {
                let windows = m.windows(target);
                for w in &windows {
                    prop_assert!(w.start_lsn <= w.end_lsn);
                    if w.end_lsn > w.start_lsn {
                        for n in w.start_lsn.segment(MB16)..=Lsn(w.end_lsn.0 - 1).segment(MB16) {
                            let name = oracle(&s, target, n);
                            prop_assert!(archived(&s, &name), "{:?} covers missing {}", w, name);
                        }
                    }
                    if let Some(gap) = w.ends_at_gap {
                        prop_assert!(!archived(&s, &gap));
                    }
                }
                for pair in windows.windows(2) {
                    prop_assert!(pair[0].end_lsn < pair[1].start_lsn, "overlap: {:?}", pair);
                }
            }
            for g in m.gaps() {
                prop_assert!(!archived(&s, &g.first_missing) && !archived(&s, &g.last_missing));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn windows_equal_planning_every_backup() {
    runner(300)
        .run(&synthetic_with(0.97, 10), |s| {
            let m = build(&s);
            for target in m.tree().timelines() {
                prop_assert_eq!(m.windows(target), m.windows_planning_each(target));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn chosen_backups_are_on_the_path_and_before_the_target() {
    runner(200)
        .run(&(synthetic(), 0i64..6), |(s, minute)| {
            let m = build(&s);
            let none = |_: &BackupPoint| None;
            for target in m.tree().timelines() {
                for t in [ModelTarget::End, ModelTarget::Time(at(minute))] {
                    let Ok(c) = m.choose_backup(&t, target, None, &none) else {
                        continue;
                    };
                    let b = &c.backup;
                    prop_assert!(oracle_on_path(&s, target, b.stop_tli, b.stop_lsn, true));
                    prop_assert!(oracle_on_path(&s, target, b.start_tli, b.start_lsn, false));
                    prop_assert!(c.plan.reaches_consistency);
                    if let ModelTarget::Time(t) = t {
                        prop_assert!(b.stop_time <= t);
                    } else {
                        prop_assert!(!c.plan.gap_ahead);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn parse_history_never_panics() {
    let valid = b"1\t0/5800000\tbefore 2026-11-23 00:10:00+00\n2\t0/A800000\tat restore point\n".to_vec();
    let mutated = (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        0usize..200,
    )
        .prop_map(move |(edits, cut)| {
            let mut bytes = valid.clone();
            for (ix, b) in edits {
                let i = ix.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.max(1).min(bytes.len()));
            bytes
        });
    runner(2000)
        .run(&(1u32..6, mutated), |(tli, bytes)| {
            if let Ok(entries) = parse_history(tli, &bytes) {
                prop_assert!(!entries.is_empty() && entries.len() < tli as usize);
                prop_assert!(entries
                    .windows(2)
                    .all(|w| w[0].parent < w[1].parent && w[0].switch_lsn <= w[1].switch_lsn));
                prop_assert!(entries.iter().all(|e| e.parent < tli));
            }
            Ok(())
        })
        .unwrap();
    runner(2000)
        .run(
            &(any::<u32>(), prop::collection::vec(any::<u8>(), 0..300)),
            |(tli, bytes)| {
                let _ = parse_history(tli, &bytes);
                Ok(())
            },
        )
        .unwrap();
}
