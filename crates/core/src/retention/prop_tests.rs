//! Property tests of the planner: random repositories (timeline branches, gaps, backups with
//! and without their WAL, chains through `parent`, pins that lapse, clock edges) and random
//! policies. The plan is applied to the synthetic repository and the archive model is rebuilt
//! from what remains; then every promise must hold:
//! - the newest backup, every actively pinned backup and every parent of a kept backup remain;
//! - every kept backup keeps the consistency segments it had, so it is still restorable to its
//!   end point;
//! - from every backup kept with continuous WAL, recovery along each target timeline (the newest
//!   and the one the backup ends on) reaches exactly as far as before;
//! - every point that was recoverable along a target timeline at or after the oldest such
//!   backup's consistent point still lies inside a recoverable window;
//! - the recovery window is honoured: a kept continuous backup is consistent at or before
//!   `now - recovery_window` whenever one was.
//!
//! Fixed seed and bounded cases: repeatable, a few seconds.

use std::collections::{BTreeSet, HashSet};

use chrono::Duration;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use super::plan_tests::{seg, summary, t0, Repo, SS};
use crate::lsn::{Lsn, TimelineId};
use crate::repository::state::Pin;
use crate::retention::plan::{plan_expire, ExpirePlan};
use crate::retention::policy::Policy;
use crate::timeline::{ArchiveModel, HistoryEntry};
use crate::wal::WalFileName;

/// (timeline index, start offset in segments from the timeline's begin, length, wal_included,
/// parent choice, pin kind: lapsed / lapsing now / forever / none, time jitter)
type RawBackup = (usize, u64, u64, bool, Option<prop::sample::Index>, u8, u8);

#[derive(Clone, Debug)]
struct Case {
    histories: Vec<(TimelineId, Vec<HistoryEntry>)>,
    wal: Vec<WalFileName>,
    backups: Vec<RawBackup>,
    policy: Policy,
    now_hours: i64,
}

fn case() -> impl Strategy<Value = Case> {
    let branches = prop::collection::vec((any::<prop::sample::Index>(), 1u64..10), 0..4);
    let present = prop::collection::vec(prop::collection::vec(prop::bool::weighted(0.92), 40), 5);
    let backups = prop::collection::vec(
        (
            0usize..5,
            0u64..25,
            0u64..3,
            prop::bool::weighted(0.2),
            prop::option::weighted(0.25, any::<prop::sample::Index>()),
            0u8..10,
            0u8..10,
        ),
        1..7,
    );
    let policy = (
        prop::option::of(1u32..4),
        prop::option::of(1u64..6000),
        prop::option::of(1u32..4),
        prop::option::of(1u32..3),
        prop::option::of(1u32..3),
    )
        .prop_map(|(keep_full, window_h, daily, weekly, monthly)| Policy {
            keep_full,
            recovery_window: window_h.map(|h| std::time::Duration::from_secs(h * 3600)),
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
            ..Policy::default()
        })
        .prop_filter("some rule", |p| !p.is_empty());
    (branches, present, backups, policy, 0i64..8000).prop_map(|(branches, present, backups, policy, now_hours)| {
        let mut histories: Vec<(TimelineId, Vec<HistoryEntry>)> = Vec::new();
        let mut begins = vec![Lsn(0)];
        for (i, (parent_ix, offset)) in branches.into_iter().enumerate() {
            let tli = i as TimelineId + 2;
            let parent = parent_ix.index(tli as usize - 1) as TimelineId + 1;
            // Sometimes exactly on a segment boundary (clock-edge of the WAL kind).
            let switch = Lsn(begins[parent as usize - 1].0 + offset * SS + if offset % 3 == 0 { 0 } else { 0x800 });
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
        let mut wal = Vec::new();
        for (t, row) in present.iter().take(begins.len()).enumerate() {
            let b = begins[t].segment(SS);
            for (s, here) in row.iter().enumerate() {
                if *here && s as u64 >= b {
                    wal.push(seg(t as TimelineId + 1, s as u64));
                }
            }
        }
        Case {
            histories,
            wal,
            backups,
            policy,
            now_hours,
        }
    })
}

fn build(c: &Case) -> Repo {
    let timelines = c.histories.len() + 1;
    let mut backups = Vec::new();
    let mut pins = Vec::new();
    for (i, &(t, off, len, wal_included, parent, pin, jitter)) in c.backups.iter().enumerate() {
        let tli = (t % timelines) as TimelineId + 1;
        let begin = c
            .histories
            .iter()
            .find(|(x, _)| *x == tli)
            .and_then(|(_, h)| h.last())
            .map_or(0, |e| e.switch_lsn.segment(SS) + 1);
        let start = begin + off;
        // Time grows with the timeline and the position on it: monotone along every history.
        let hours = i64::from(tli) * 1000 + start as i64 * 10 + i64::from(jitter);
        let mut b = summary(i, tli, start, start + len, t0() + Duration::hours(hours));
        b.wal_included = wal_included;
        if let Some(p) = parent.filter(|_| i > 0) {
            b.parent = Some(format!("20260101-{:06}F", p.index(i)));
        }
        let now = t0() + Duration::hours(c.now_hours);
        match pin {
            0 => pins.push(Pin {
                backup: b.id.clone(),
                created_at: t0(),
                until: Some(now - Duration::hours(1)),
                note: None,
            }),
            1 => pins.push(Pin {
                backup: b.id.clone(),
                created_at: t0(),
                until: Some(now),
                note: None,
            }),
            2 => pins.push(Pin {
                backup: b.id.clone(),
                created_at: t0(),
                until: None,
                note: Some("keep".into()),
            }),
            _ => {}
        }
        backups.push(b);
    }
    Repo {
        histories: c.histories.clone(),
        wal: c.wal.iter().map(|n| (*n, 16)).collect(),
        backups,
        pins,
        orphans: Vec::new(),
    }
}

/// The repository after `plan`.
fn apply(r: &Repo, plan: &ExpirePlan) -> Repo {
    let gone_b: HashSet<&String> = plan.delete_backups.iter().map(|b| &b.id).collect();
    let gone_w: HashSet<&WalFileName> = plan.delete_wal.iter().collect();
    Repo {
        histories: r.histories.clone(),
        wal: r.wal.iter().filter(|(n, _)| !gone_w.contains(n)).copied().collect(),
        backups: r.backups.iter().filter(|b| !gone_b.contains(&b.id)).cloned().collect(),
        pins: r.pins.clone(),
        orphans: Vec::new(),
    }
}

fn check(c: &Case) -> Result<(), TestCaseError> {
    let r = build(c);
    let now = t0() + Duration::hours(c.now_hours);
    let before = r.model();
    let plan = plan_expire(&r.input(&before, now), &c.policy).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let after_repo = apply(&r, &plan);
    let after = after_repo.model();
    let kept: HashSet<&str> = after_repo.backups.iter().map(|b| b.id.as_str()).collect();
    // Newest, pins, parents.
    let newest = r
        .backups
        .iter()
        .max_by_key(|b| (b.stop_time, b.id.clone()))
        .expect("a backup");
    prop_assert!(kept.contains(newest.id.as_str()));
    for p in r.pins.iter().filter(|p| p.active_at(now)) {
        prop_assert!(kept.contains(p.backup.as_str()), "pinned {} deleted", p.backup);
    }
    for b in &after_repo.backups {
        if let Some(parent) = &b.parent {
            prop_assert!(kept.contains(parent.as_str()), "parent {parent} of {} deleted", b.id);
        }
    }
    // Consistency segments of every kept backup.
    for b in &after_repo.backups {
        for s in before.consistency_segments(&b.point()) {
            if before.is_archived(&s) {
                prop_assert!(after.is_archived(&s), "{s} of kept {} deleted", b.id);
            }
            let pb = before.plan_recovery(&b.point(), b.stop_timeline, None);
            let pa = after.plan_recovery(&b.point(), b.stop_timeline, None);
            prop_assert_eq!(pb.reaches_consistency, pa.reaches_consistency);
        }
    }
    check_continuous(&r, &plan, &before, &after)?;
    if let Some(d) = c.policy.recovery_window {
        let boundary = now - Duration::from_std(d).expect("bounded");
        if r.backups.iter().any(|b| b.stop_time <= boundary) {
            let cont: Vec<&str> = plan
                .keep
                .iter()
                .filter(|k| k.continuous)
                .map(|k| k.id.as_str())
                .collect();
            prop_assert!(after_repo
                .backups
                .iter()
                .any(|b| b.stop_time <= boundary && cont.contains(&b.id.as_str())));
        }
    }
    Ok(())
}

fn check_continuous(
    r: &Repo,
    plan: &ExpirePlan,
    before: &ArchiveModel,
    after: &ArchiveModel,
) -> Result<(), TestCaseError> {
    let continuous: Vec<_> = r
        .backups
        .iter()
        .filter(|b| plan.keep.iter().any(|k| k.id == b.id && k.continuous))
        .collect();
    let mut targets: BTreeSet<TimelineId> = continuous.iter().map(|b| b.stop_timeline).collect();
    targets.insert(before.tree().highest_known());
    for &l in &targets {
        let mut floor: Option<Lsn> = None;
        for b in &continuous {
            let pb = before.plan_recovery(&b.point(), l, None);
            let pa = after.plan_recovery(&b.point(), l, None);
            if !pb.backup_on_path {
                continue;
            }
            prop_assert_eq!(pb.reaches_consistency, pa.reaches_consistency, "{} along {}", b.id, l);
            prop_assert_eq!(pb.reachable_end, pa.reachable_end, "{} along {}", b.id, l);
            if pb.reaches_consistency {
                floor = Some(floor.map_or(b.stop_lsn, |f: Lsn| f.min(b.stop_lsn)));
            }
        }
        let Some(floor) = floor else { continue };
        let wa = after.windows(l);
        for w in before.windows(l) {
            let lo = w.start_lsn.max(floor);
            if lo >= w.end_lsn {
                continue;
            }
            prop_assert!(
                wa.iter().any(|a| a.start_lsn <= lo && a.end_lsn >= w.end_lsn),
                "points {lo}..{} along {l} no longer recoverable: {wa:?}",
                w.end_lsn
            );
        }
    }
    Ok(())
}

#[test]
fn prop_plans_keep_every_promise() {
    let mut runner = TestRunner::new(Config {
        cases: 600,
        rng_seed: RngSeed::Fixed(0x7265_7465_6e74_696f),
        failure_persistence: None,
        ..Config::default()
    });
    runner.run(&case(), |c| check(&c)).expect("retention promises hold");
}

#[test]
fn prop_plans_are_stable_when_rerun() {
    // Applying a plan and planning again deletes nothing more (a re-run after a completed run
    // is a no-op; an interrupted run's re-run finishes the same deletions).
    let mut runner = TestRunner::new(Config {
        cases: 300,
        rng_seed: RngSeed::Fixed(0x7265_7275_6e21),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |c| {
            let r = build(&c);
            let now = t0() + Duration::hours(c.now_hours);
            let m = r.model();
            let plan = plan_expire(&r.input(&m, now), &c.policy).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let r2 = apply(&r, &plan);
            let m2 = r2.model();
            let again = plan_expire(&r2.input(&m2, now), &c.policy).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(again.delete_backups.is_empty(), "{:?}", again.delete_backups);
            prop_assert!(again.delete_wal.is_empty(), "{:?}", again.delete_wal);
            Ok(())
        })
        .expect("re-runs are no-ops");
}
