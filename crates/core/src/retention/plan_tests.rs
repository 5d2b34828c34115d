//! Planner unit tests over small synthetic repositories: linear history, a branch, pins,
//! parents, clock edges, orphans, `delete`.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::lsn::{Lsn, TimelineId};
use crate::repository::catalog::BackupKind;
use crate::repository::state::Pin;
use crate::repository::summary::BackupSummary;
use crate::retention::plan::*;
use crate::retention::policy::Policy;
use crate::timeline::{ArchiveModel, HistoryEntry, TimelineTree};
use crate::wal::{WalFileName, WalKind};

pub(super) const SS: u64 = 16 << 20;

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("fixed date")
}

pub(super) fn seg(tli: TimelineId, n: u64) -> WalFileName {
    WalFileName::from_segment_number(tli, n, SS)
}

/// A backup on `tli` from segment `start` (offset 0x100) to inside segment `stop`, ending at
/// `stop_time`.
pub(super) fn summary(i: usize, tli: TimelineId, start: u64, stop: u64, stop_time: DateTime<Utc>) -> BackupSummary {
    let start_lsn = Lsn(start * SS + 0x100);
    let stop_lsn = Lsn(stop * SS + 0x200);
    BackupSummary {
        id: format!("20260101-{:06}F", i),
        label: String::new(),
        kind: BackupKind::Full,
        parent: None,
        system_identifier: 1,
        pg_version_num: 150000,
        timeline: tli,
        start_lsn,
        stop_lsn,
        stop_timeline: tli,
        start_wal: seg(tli, start).to_string(),
        stop_wal: seg(tli, stop).to_string(),
        start_time: stop_time - Duration::minutes(1),
        stop_time,
        wal_included: false,
        snapshot_after_stop: None,
        size: 1000,
        stored_size: 100,
        file_count: 3,
        compression: "zstd".into(),
        encrypted: true,
    }
}

pub(super) struct Repo {
    pub histories: Vec<(TimelineId, Vec<HistoryEntry>)>,
    pub wal: Vec<(WalFileName, u64)>,
    pub backups: Vec<BackupSummary>,
    pub pins: Vec<Pin>,
    pub orphans: Vec<OrphanDir>,
}

impl Repo {
    pub fn model(&self) -> ArchiveModel {
        let tree = TimelineTree::from_histories(self.histories.clone()).expect("histories agree");
        ArchiveModel::new(
            SS,
            tree,
            self.wal.iter().map(|(n, _)| *n),
            self.backups.iter().map(BackupSummary::point).collect(),
            HashMap::new(),
        )
        .expect("model")
    }

    pub fn input<'a>(&'a self, model: &'a ArchiveModel, now: DateTime<Utc>) -> PlanInput<'a> {
        PlanInput {
            backups: &self.backups,
            pins: &self.pins,
            model,
            wal: &self.wal,
            orphans: &self.orphans,
            now,
        }
    }

    pub fn plan(&self, policy: &Policy, now: DateTime<Utc>) -> Result<ExpirePlan, PlanError> {
        let model = self.model();
        plan_expire(&self.input(&model, now), policy)
    }
}

fn linear(n_backups: usize) -> Repo {
    // Backup i spans segments 10i+1 .. 10i+2 on timeline 1, one day apart; WAL 0..=10n+5.
    let backups = (0..n_backups)
        .map(|i| {
            summary(
                i,
                1,
                10 * i as u64 + 1,
                10 * i as u64 + 2,
                t0() + Duration::days(i as i64),
            )
        })
        .collect();
    Repo {
        histories: Vec::new(),
        wal: (0..=10 * n_backups as u64 + 5).map(|s| (seg(1, s), 10)).collect(),
        backups,
        pins: Vec::new(),
        orphans: Vec::new(),
    }
}

fn ids(p: &ExpirePlan) -> Vec<String> {
    p.delete_backups.iter().map(|b| b.id.clone()).collect()
}

fn id(i: usize) -> String {
    format!("20260101-{:06}F", i)
}

#[test]
fn keep_full_keeps_the_newest_and_wal_from_the_oldest_kept_start() {
    let r = linear(4);
    let p = r
        .plan(
            &Policy {
                keep_full: Some(2),
                ..Policy::default()
            },
            t0() + Duration::days(10),
        )
        .unwrap();
    assert_eq!(ids(&p), vec![id(0), id(1)]);
    let h = p.horizon.clone().unwrap();
    assert_eq!(h.backup, id(2));
    // Everything before backup 2's start segment (21) goes, nothing after.
    let expect: Vec<WalFileName> = (0..21).map(|s| seg(1, s)).collect();
    assert_eq!(p.delete_wal, expect);
    assert_eq!(p.wal_ranges.len(), 1);
    assert_eq!(p.bytes_freed, 200 + 21 * 10);
    // The window after starts at backup 2 and reaches the archive's end, as before.
    let before = &p.window_before[0].windows;
    let after = &p.window_after[0].windows;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].end_lsn, before.last().unwrap().end_lsn);
    assert_eq!(after[0].from_backup, id(2));
}

#[test]
fn no_policy_deletes_nothing() {
    let r = linear(3);
    assert!(matches!(
        r.plan(&Policy::default(), t0() + Duration::days(10)),
        Err(PlanError::NoPolicy)
    ));
}

#[test]
fn recovery_window_clock_edge_keeps_the_backup_ending_on_the_boundary() {
    let r = linear(4);
    // Backups end on days 0, 1, 2, 3. Window of 2 days at day 3: boundary = day 1 exactly.
    let p = r
        .plan(
            &Policy {
                recovery_window: Some(std::time::Duration::from_secs(2 * 86400)),
                ..Policy::default()
            },
            t0() + Duration::days(3),
        )
        .unwrap();
    assert_eq!(ids(&p), vec![id(0)]);
    assert_eq!(p.horizon.unwrap().backup, id(1));
    // One second later the boundary passes backup 1: it is still the anchor (newest at or
    // before the boundary), and backup 0 still goes.
    let p = r
        .plan(
            &Policy {
                recovery_window: Some(std::time::Duration::from_secs(2 * 86400)),
                ..Policy::default()
            },
            t0() + Duration::days(3) + Duration::seconds(1),
        )
        .unwrap();
    assert_eq!(ids(&p), vec![id(0)]);
    // One second earlier the boundary lies before backup 1: backup 0 is the anchor.
    let p = r
        .plan(
            &Policy {
                recovery_window: Some(std::time::Duration::from_secs(2 * 86400)),
                ..Policy::default()
            },
            t0() + Duration::days(3) - Duration::seconds(1),
        )
        .unwrap();
    assert!(ids(&p).is_empty());
}

#[test]
fn gfs_backups_keep_only_their_own_wal() {
    let mut r = linear(4);
    // Put backups 0 and 1 in separate months, 2 and 3 in a third.
    r.backups[0].stop_time = t0() - Duration::days(70);
    r.backups[1].stop_time = t0() - Duration::days(40);
    let p = r
        .plan(
            &Policy {
                keep_full: Some(1),
                keep_monthly: Some(3),
                ..Policy::default()
            },
            t0() + Duration::days(10),
        )
        .unwrap();
    // Backup 2 (same month as 3, older) goes; 0 and 1 stay as monthly.
    assert_eq!(ids(&p), vec![id(2)]);
    let kept0 = p.keep.iter().find(|k| k.id == id(0)).unwrap();
    assert!(!kept0.continuous);
    assert!(matches!(kept0.reasons[0], KeepReason::Monthly { .. }));
    // Kept: 1..=2 (backup 0), 11..=12 (backup 1), 31.. (continuous from backup 3).
    let kept: Vec<u64> = r
        .wal
        .iter()
        .filter(|(n, _)| !p.delete_wal.contains(n))
        .map(|(n, _)| n.segment_number(SS))
        .collect();
    let mut expect = vec![1, 2, 11, 12];
    expect.extend(31..=45);
    assert_eq!(kept, expect);
    // Each GFS backup is still a window of its own (restorable to its end).
    let after = &p.window_after[0].windows;
    assert_eq!(after.len(), 3, "{after:?}");
}

#[test]
fn pins_protect_until_they_lapse_and_parents_are_kept() {
    let mut r = linear(4);
    r.pins.push(Pin {
        backup: id(0),
        created_at: t0(),
        until: Some(t0() + Duration::days(20)),
        note: Some("audit".into()),
    });
    r.backups[3].parent = Some(id(1));
    let policy = Policy {
        keep_full: Some(1),
        ..Policy::default()
    };
    let p = r.plan(&policy, t0() + Duration::days(10)).unwrap();
    assert_eq!(ids(&p), vec![id(2)]);
    let k1 = p.keep.iter().find(|k| k.id == id(1)).unwrap();
    assert_eq!(k1.reasons, vec![KeepReason::ParentOf { child: id(3) }]);
    // The pin lapses at its `until` exactly.
    let p = r.plan(&policy, t0() + Duration::days(20)).unwrap();
    assert_eq!(ids(&p), vec![id(0), id(2)]);
}

#[test]
fn newest_backup_is_always_kept() {
    let r = linear(2);
    let p = r
        .plan(
            &Policy {
                keep_daily: Some(1),
                ..Policy::default()
            },
            t0() + Duration::days(400),
        )
        .unwrap();
    assert_eq!(ids(&p), vec![id(0)]);
    assert!(p.keep[0].reasons.contains(&KeepReason::Newest));
}

/// Timeline 1 segments 0..=30; timeline 2 branches at segment 12 (abandoned, no backup);
/// timeline 3 branches at segment 20 (newest). Backups on 1 at 2 and 8 and on 3 at 25.
fn branched() -> Repo {
    let h2 = vec![HistoryEntry {
        parent: 1,
        switch_lsn: Lsn(12 * SS + 0x500),
        reason: String::new(),
    }];
    let h3 = vec![HistoryEntry {
        parent: 1,
        switch_lsn: Lsn(20 * SS + 0x500),
        reason: String::new(),
    }];
    let mut wal: Vec<(WalFileName, u64)> = (0..=22).map(|s| (seg(1, s), 10)).collect();
    wal.extend((12..=18).map(|s| (seg(2, s), 10)));
    wal.extend((20..=30).map(|s| (seg(3, s), 10)));
    wal.push((
        WalFileName {
            kind: WalKind::Partial,
            ..seg(1, 20)
        },
        10,
    ));
    wal.push((
        WalFileName {
            kind: WalKind::History,
            log: 0,
            seg: 0,
            timeline: 2,
        },
        1,
    ));
    wal.push((
        WalFileName {
            kind: WalKind::Backup { offset: 0x100 },
            ..seg(1, 2)
        },
        1,
    ));
    Repo {
        histories: vec![(2, h2), (3, h3)],
        wal,
        backups: vec![
            summary(0, 1, 2, 3, t0()),
            summary(1, 1, 8, 9, t0() + Duration::days(1)),
            summary(2, 3, 25, 26, t0() + Duration::days(2)),
        ],
        pins: Vec::new(),
        orphans: Vec::new(),
    }
}

#[test]
fn abandoned_branch_loses_its_wal_after_the_fork() {
    let r = branched();
    let p = r
        .plan(
            &Policy {
                keep_full: Some(2),
                ..Policy::default()
            },
            t0() + Duration::days(3),
        )
        .unwrap();
    assert_eq!(ids(&p), vec![id(0)]);
    let deleted: Vec<String> = p.delete_wal.iter().map(|n| n.to_string()).collect();
    // Timeline 1 before backup 1's start (8), including backup 0's `.backup` file; every
    // segment of the abandoned timeline 2; nothing of 3 nor 1's stretch up to the fork of 3.
    let mut expect: Vec<String> = (0..8).map(|s| seg(1, s).to_string()).collect();
    expect.push(format!("{}.00000100.backup", seg(1, 2)));
    expect.extend((12..=18).map(|s| seg(2, s).to_string()));
    let mut deleted_sorted = deleted.clone();
    deleted_sorted.sort();
    expect.sort();
    assert_eq!(deleted_sorted, expect);
    // Timeline 1's segments up to 22 stay (backup 1's own timeline is a target), the
    // `.partial` and the history file stay.
    assert!(!deleted
        .iter()
        .any(|d| d.ends_with(".partial") || d.ends_with(".history")));
}

#[test]
fn delete_refuses_pinned_and_depended_on_and_shows_the_window_left() {
    let mut r = linear(3);
    r.backups[2].parent = Some(id(1));
    r.pins.push(Pin {
        backup: id(0),
        created_at: t0(),
        until: None,
        note: None,
    });
    let model = r.model();
    let input = r.input(&model, t0() + Duration::days(5));
    assert!(matches!(plan_delete(&input, &id(0)), Err(PlanError::Pinned { .. })));
    match plan_delete(&input, &id(1)) {
        Err(PlanError::DependedOn { by, .. }) => assert_eq!(by, vec![id(2)]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        plan_delete(&input, "20990101-000000F"),
        Err(PlanError::NotFound(_))
    ));
    r.backups[2].parent = None;
    let model = r.model();
    let input = r.input(&model, t0() + Duration::days(5));
    let p = plan_delete(&input, &id(1)).unwrap();
    assert_eq!(ids(&p), vec![id(1)]);
    assert!(p.delete_wal.is_empty() && p.horizon.is_none());
    assert_eq!(p.window_after[0].windows[0].backups, vec![id(0), id(2)]);
}

#[test]
fn orphans_are_removed_only_past_the_safety_age() {
    let mut r = linear(2);
    let now = t0() + Duration::days(5);
    for (i, age) in [(7, 25), (8, 23)] {
        r.orphans.push(OrphanDir {
            id: id(i),
            objects: 2,
            bytes: 5,
            newest: now - Duration::hours(age),
        });
    }
    let p = r
        .plan(
            &Policy {
                keep_full: Some(2),
                orphan_min_age: std::time::Duration::from_secs(24 * 3600),
                ..Policy::default()
            },
            now,
        )
        .unwrap();
    let removed: Vec<bool> = p.orphans.iter().map(|o| o.remove).collect();
    assert_eq!(removed, vec![true, false]);
}
