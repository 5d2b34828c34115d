//! Retention over chains of incremental backups: `keep_full` counts full backups and keeps
//! their dependents with them; no kept backup ever loses a link of its chain.

use chrono::Duration;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use crate::repository::catalog::BackupKind;
use crate::retention::plan_tests::{seg, summary, t0, Repo};
use crate::retention::policy::Policy;

/// Backups one day apart on timeline 1; `parents[i]`: the index of backup i's parent (an
/// incremental backup), or `None` (a full one).
fn repo(parents: &[Option<usize>]) -> Repo {
    let n = parents.len();
    let backups = parents
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut b = summary(
                i,
                1,
                10 * i as u64 + 1,
                10 * i as u64 + 2,
                t0() + Duration::days(i as i64),
            );
            if let Some(p) = p {
                b.kind = BackupKind::Incr;
                b.id = format!("20260101-{i:06}I");
                b.parent = Some(id_of(parents, *p));
            }
            b
        })
        .collect();
    Repo {
        histories: Vec::new(),
        wal: (0..=10 * n as u64 + 5).map(|s| (seg(1, s), 10)).collect(),
        backups,
        pins: Vec::new(),
        orphans: Vec::new(),
        unreadable: Vec::new(),
    }
}

fn id_of(parents: &[Option<usize>], i: usize) -> String {
    format!("20260101-{i:06}{}", if parents[i].is_some() { 'I' } else { 'F' })
}

fn keep_full(n: u32) -> Policy {
    Policy {
        keep_full: Some(n),
        ..Policy::default()
    }
}

#[test]
fn keep_full_counts_fulls_and_expires_their_dependents_with_them() {
    let parents = [None, Some(0), Some(1), None, Some(3), Some(3)];
    let r = repo(&parents);
    let p = r.plan(&keep_full(1), t0() + Duration::days(10)).unwrap();
    let deleted: Vec<String> = p.delete_backups.iter().map(|b| b.id.clone()).collect();
    assert_eq!(
        deleted,
        vec![id_of(&parents, 0), id_of(&parents, 1), id_of(&parents, 2)]
    );
    let p = r.plan(&keep_full(2), t0() + Duration::days(10)).unwrap();
    assert!(p.delete_backups.is_empty(), "{:?}", p.delete_backups);
}

#[test]
fn no_kept_backup_loses_a_link() {
    let mut runner = TestRunner::new(Config {
        cases: 200,
        rng_seed: RngSeed::Fixed(0x0063_6861_696e),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(prop::option::weighted(0.6, any::<prop::sample::Index>()), 1..9),
        1u32..4,
        prop::option::of(1u32..4),
    );
    runner
        .run(&strategy, |(raw, n, daily)| {
            // Backup 0 is full; the others are full or built on an earlier backup.
            let parents: Vec<Option<usize>> = raw
                .iter()
                .enumerate()
                .map(|(i, p)| p.as_ref().filter(|_| i > 0).map(|ix| ix.index(i)))
                .collect();
            let r = repo(&parents);
            let policy = Policy {
                keep_daily: daily,
                ..keep_full(n)
            };
            let p = r.plan(&policy, t0() + Duration::days(20)).unwrap();
            let deleted: Vec<&str> = p.delete_backups.iter().map(|b| b.id.as_str()).collect();
            for b in &r.backups {
                if deleted.contains(&b.id.as_str()) {
                    continue;
                }
                if let Some(parent) = &b.parent {
                    prop_assert!(
                        !deleted.contains(&parent.as_str()),
                        "{} kept, its parent {parent} deleted",
                        b.id
                    );
                }
            }
            let fulls_kept = r
                .backups
                .iter()
                .filter(|b| b.parent.is_none() && !deleted.contains(&b.id.as_str()))
                .count();
            let fulls = parents.iter().filter(|p| p.is_none()).count();
            prop_assert!(
                fulls_kept >= fulls.min(n as usize),
                "keep_full {n}: {fulls_kept} of {fulls} kept"
            );
            Ok(())
        })
        .unwrap();
}
