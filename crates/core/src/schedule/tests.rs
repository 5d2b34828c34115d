//! The scheduler with an injected clock: cron edges, daylight saving, missed runs, overlap.

use chrono::{DateTime, TimeZone, Utc};

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn cron(s: &str) -> CronExpr {
    CronExpr::parse(s).unwrap()
}

fn next(expr: &str, after: &str) -> DateTime<Utc> {
    cron(expr).next_after(utc(after), &Utc).unwrap()
}

fn berlin() -> ScheduleZone {
    ScheduleZone::parse("Europe/Berlin").unwrap()
}

#[test]
fn parse_errors_name_the_field() {
    for (bad, what) in [
        ("* * * *", "4 fields"),
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day of week"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("x * * * *", "minute"),
        ("@often", "macro"),
    ] {
        let err = CronExpr::parse(bad).unwrap_err().to_string();
        assert!(err.contains(what), "{bad}: {err}");
    }
    assert!(CronExpr::parse("0 2 * jan-mar mon-fri").is_ok());
    assert_eq!(
        next("@daily", "2026-01-01T10:00:00Z"),
        next("0 0 * * *", "2026-01-01T10:00:00Z")
    );
    assert_eq!(next("@weekly", "2026-01-01T10:00:00Z"), utc("2026-01-04T00:00:00Z"));
}

#[test]
fn steps_ranges_and_lists() {
    assert_eq!(
        next("*/15 * * * *", "2026-01-01T10:07:00Z"),
        utc("2026-01-01T10:15:00Z")
    );
    assert_eq!(
        next("*/15 * * * *", "2026-01-01T10:45:00Z"),
        utc("2026-01-01T11:00:00Z")
    );
    assert_eq!(
        next("5,35 * * * *", "2026-01-01T10:05:00Z"),
        utc("2026-01-01T10:35:00Z")
    );
    // 9-17/4 = 9, 13, 17 on weekdays; 2026-01-02 is a Friday, 2026-01-05 a Monday.
    assert_eq!(
        next("0 9-17/4 * * 1-5", "2026-01-02T13:00:00Z"),
        utc("2026-01-02T17:00:00Z")
    );
    assert_eq!(
        next("0 9-17/4 * * mon-fri", "2026-01-02T17:00:00Z"),
        utc("2026-01-05T09:00:00Z")
    );
    // 7 is Sunday too: 2026-01-04 is a Sunday.
    assert_eq!(next("0 3 * * 7", "2026-01-01T00:00:00Z"), utc("2026-01-04T03:00:00Z"));
    // `10/20` = 10, 30, 50.
    assert_eq!(
        next("10/20 * * * *", "2026-01-01T10:31:00Z"),
        utc("2026-01-01T10:50:00Z")
    );
}

#[test]
fn month_ends_and_leap_days() {
    assert_eq!(next("0 0 31 * *", "2026-01-31T00:00:00Z"), utc("2026-03-31T00:00:00Z"));
    assert_eq!(next("0 0 30 * *", "2026-01-30T00:00:00Z"), utc("2026-03-30T00:00:00Z"));
    assert_eq!(next("0 0 29 2 *", "2025-01-01T00:00:00Z"), utc("2028-02-29T00:00:00Z"));
    assert_eq!(
        next("59 23 28-31 * *", "2026-02-28T23:59:00Z"),
        utc("2026-03-28T23:59:00Z")
    );
    assert_eq!(next("0 0 1 1 *", "2026-12-31T23:59:59Z"), utc("2027-01-01T00:00:00Z"));
    assert!(cron("0 0 31 2 *")
        .next_after(utc("2026-01-01T00:00:00Z"), &Utc)
        .is_none());
}

#[test]
fn both_day_fields_restricted_means_either() {
    // The 13th, or any Friday: 2026-02-06 is a Friday before the 13th.
    assert_eq!(next("0 0 13 * 5", "2026-02-01T00:00:00Z"), utc("2026-02-06T00:00:00Z"));
    // Day of month alone (weekday `*`): only the 13th.
    assert_eq!(next("0 0 13 * *", "2026-02-01T00:00:00Z"), utc("2026-02-13T00:00:00Z"));
}

#[test]
fn spring_forward_runs_a_skipped_time_once_right_after_the_jump() {
    // Europe/Berlin 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist.
    let z = berlin();
    let c = cron("30 2 * * *");
    let first = z.next_after(&c, utc("2026-03-28T12:00:00Z")).unwrap();
    assert_eq!(
        first,
        utc("2026-03-29T01:00:00Z"),
        "at 03:00 CEST, the first instant after the jump"
    );
    let second = z.next_after(&c, first).unwrap();
    assert_eq!(second, utc("2026-03-30T00:30:00Z"), "the next day at 02:30 CEST, once");
    // A job every 15 minutes through the gap runs once for the whole skipped hour.
    let q = cron("*/15 * * * *");
    let a = z.next_after(&q, utc("2026-03-29T00:45:00Z")).unwrap();
    assert_eq!(a, utc("2026-03-29T01:00:00Z"));
    assert_eq!(z.next_after(&q, a).unwrap(), utc("2026-03-29T01:15:00Z"));
}

#[test]
fn fall_back_runs_a_repeated_time_once() {
    // Europe/Berlin 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    let z = berlin();
    let c = cron("30 2 * * *");
    let first = z.next_after(&c, utc("2026-10-24T12:00:00Z")).unwrap();
    assert_eq!(first, utc("2026-10-25T00:30:00Z"), "the first 02:30 (CEST)");
    let second = z.next_after(&c, first).unwrap();
    assert_eq!(
        second,
        utc("2026-10-26T01:30:00Z"),
        "not the second 02:30 (CET), the next day's"
    );
    let runs = (0..3).scan(utc("2026-10-24T12:00:00Z"), |at, _| {
        *at = z.next_after(&c, *at)?;
        Some(*at)
    });
    assert_eq!(
        runs.filter(|r| r.date_naive() == utc("2026-10-25T00:00:00Z").date_naive())
            .count(),
        1
    );
}

#[test]
fn named_zones_and_errors() {
    assert_eq!(ScheduleZone::parse("UTC").unwrap(), ScheduleZone::Utc);
    assert_eq!(ScheduleZone::parse("local").unwrap(), ScheduleZone::Local);
    assert!(ScheduleZone::parse("Mars/Olympus").unwrap_err().contains("IANA"));
    let tokyo = ScheduleZone::parse("Asia/Tokyo").unwrap();
    assert_eq!(
        tokyo
            .next_after(&cron("0 2 * * *"), utc("2026-01-01T00:00:00Z"))
            .unwrap(),
        utc("2026-01-01T17:00:00Z")
    );
}

fn jobs(list: &[(JobKind, &str)]) -> Vec<Job> {
    list.iter()
        .map(|(kind, c)| Job {
            kind: *kind,
            cron: cron(c),
        })
        .collect()
}

#[test]
fn without_a_known_last_run_a_job_waits_for_its_slot() {
    let now = utc("2026-01-01T10:10:00Z");
    let mut s = Scheduler::new(ScheduleZone::Utc, jobs(&[(JobKind::Backup, "0 * * * *")]), now, |_| {
        None
    });
    assert!(s.take_due(now).is_none());
    assert_eq!(s.next_wake(), Some(utc("2026-01-01T11:00:00Z")));
    let due = s.take_due(utc("2026-01-01T11:00:00Z")).unwrap();
    assert_eq!((due.kind, due.coalesced), (JobKind::Backup, 0));
}

#[test]
fn after_downtime_a_missed_job_runs_once() {
    // Daily at 02:00; the last backup was three days ago; the daemon starts now.
    let now = utc("2026-01-10T09:00:00Z");
    let last = utc("2026-01-07T02:05:00Z");
    let mut s = Scheduler::new(
        ScheduleZone::Utc,
        jobs(&[(JobKind::Backup, "0 2 * * *"), (JobKind::Drill, "0 4 * * 0")]),
        now,
        |k| (k == JobKind::Backup).then_some(last),
    );
    let due = s.take_due(now).expect("the missed backup is due at once");
    assert_eq!(due.kind, JobKind::Backup);
    assert_eq!(due.slot, utc("2026-01-10T02:00:00Z"), "serving the newest missed slot");
    assert_eq!(due.coalesced, 2, "01-08 and 01-09 folded into this one run");
    assert_eq!(s.finish(JobKind::Backup, now, utc("2026-01-10T09:20:00Z")), 0);
    assert!(
        s.take_due(utc("2026-01-10T09:20:00Z")).is_none(),
        "once, not three times"
    );
    assert_eq!(s.next_wake(), Some(utc("2026-01-11T02:00:00Z")));
}

#[test]
fn a_long_job_skips_its_own_slots_and_holds_others_back() {
    let start = utc("2026-01-01T09:59:00Z");
    let mut s = Scheduler::new(
        ScheduleZone::Utc,
        jobs(&[(JobKind::Backup, "0 * * * *"), (JobKind::Verify, "0 11 * * *")]),
        start,
        |_| None,
    );
    let t0 = utc("2026-01-01T10:00:00Z");
    let due = s.take_due(t0).unwrap();
    assert_eq!(due.kind, JobKind::Backup);
    assert_eq!(s.running(), Some(JobKind::Backup));
    // Verify falls due at 11:00 while the backup still runs: it waits.
    assert!(s.take_due(utc("2026-01-01T11:00:00Z")).is_none());
    assert_eq!(s.next_wake(), Some(utc("2026-01-01T11:00:00Z")));
    // The backup ends at 12:30: its 11:00 and 12:00 slots are skipped.
    let end = utc("2026-01-01T12:30:00Z");
    assert_eq!(s.finish(JobKind::Backup, t0, end), 2);
    let due = s.take_due(end).unwrap();
    assert_eq!((due.kind, due.coalesced), (JobKind::Verify, 0));
    assert!(s.take_due(end).is_none(), "one job at a time");
    s.finish(JobKind::Verify, end, utc("2026-01-01T12:40:00Z"));
    assert_eq!(s.next_wake(), Some(utc("2026-01-01T13:00:00Z")));
}

#[test]
fn jobs_due_together_run_in_order() {
    let now = utc("2026-01-01T00:00:00Z");
    let mut s = Scheduler::new(
        ScheduleZone::Utc,
        jobs(&[(JobKind::Drill, "* * * * *"), (JobKind::Backup, "* * * * *")]),
        utc("2025-12-31T23:59:30Z"),
        |_| None,
    );
    assert_eq!(s.take_due(now).unwrap().kind, JobKind::Backup);
    s.finish(JobKind::Backup, now, now + chrono::Duration::seconds(5));
    assert_eq!(
        s.take_due(now + chrono::Duration::seconds(5)).unwrap().kind,
        JobKind::Drill
    );
}

#[test]
fn upcoming_and_max_interval() {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let s = Scheduler::new(
        ScheduleZone::Utc,
        jobs(&[(JobKind::Backup, "0 1 * * 1-5")]),
        now,
        |_| None,
    );
    let next = s.upcoming(JobKind::Backup, now, 3);
    assert_eq!(
        next,
        vec![
            utc("2026-01-01T01:00:00Z"),
            utc("2026-01-02T01:00:00Z"),
            utc("2026-01-05T01:00:00Z")
        ]
    );
    // Weekdays only: the longest gap is Friday to Monday.
    assert_eq!(
        s.max_interval(JobKind::Backup, now, 30),
        Some(chrono::Duration::days(3))
    );
    assert!(s.upcoming(JobKind::Drill, now, 3).is_empty());
}

#[test]
fn backups_due_together_the_biggest_runs_and_the_others_skip_the_slot() {
    // Full on Sundays at 01:00, diff on Wednesdays at 01:00, incr daily at 01:00.
    let list = [
        (JobKind::BackupIncr, "0 1 * * *"),
        (JobKind::BackupDiff, "0 1 * * 3"),
        (JobKind::Backup, "0 1 * * 0"),
        (JobKind::Verify, "0 1 * * *"),
    ];
    let mut s = Scheduler::new(ScheduleZone::Utc, jobs(&list), utc("2026-01-03T12:00:00Z"), |_| None);
    // 2026-01-04 is a Sunday: the full runs, diff is not due, incr skips.
    let sunday = utc("2026-01-04T01:00:00Z");
    let due = s.take_due(sunday).unwrap();
    assert_eq!(due.kind, JobKind::Backup);
    assert_eq!(due.superseded, vec![(JobKind::BackupIncr, sunday)]);
    s.finish(JobKind::Backup, sunday, utc("2026-01-04T01:30:00Z"));
    let due = s.take_due(utc("2026-01-04T01:30:00Z")).unwrap();
    assert_eq!(due.kind, JobKind::Verify, "other jobs still run after the backup");
    s.finish(JobKind::Verify, sunday, utc("2026-01-04T01:40:00Z"));
    assert!(
        s.take_due(utc("2026-01-04T01:40:00Z")).is_none(),
        "the incr does not run after the full"
    );
    // Monday: only the incr.
    let monday = utc("2026-01-05T01:00:00Z");
    let due = s.take_due(monday).unwrap();
    assert_eq!((due.kind, due.superseded.len()), (JobKind::BackupIncr, 0));
    s.finish(JobKind::BackupIncr, monday, monday);
    s.finish(JobKind::Verify, monday, monday);
    // Wednesday 2026-01-07: the diff wins over the incr.
    let wednesday = utc("2026-01-07T01:00:00Z");
    s.take_due(utc("2026-01-06T01:00:00Z"))
        .map(|d| s.finish(d.kind, monday, monday));
    s.take_due(utc("2026-01-06T01:00:00Z"))
        .map(|d| s.finish(d.kind, monday, monday));
    let due = s.take_due(wednesday).unwrap();
    assert_eq!(due.kind, JobKind::BackupDiff);
    assert_eq!(due.superseded, vec![(JobKind::BackupIncr, wednesday)]);
    // --print and the metrics: the incr's Sunday and Wednesday slots are not runs of it.
    let from = utc("2026-01-03T12:00:00Z");
    let slots = s.upcoming_slots(JobKind::BackupIncr, from, 5, true);
    assert_eq!(slots[0], (sunday, Some(JobKind::Backup)));
    assert_eq!(slots[1], (monday, None));
    assert_eq!(slots[3], (wednesday, Some(JobKind::BackupDiff)));
    let runs = s.upcoming(JobKind::BackupIncr, from, 4);
    assert!(!runs.contains(&sunday) && !runs.contains(&wednesday), "{runs:?}");
    assert_eq!(
        s.upcoming(JobKind::Backup, from, 1),
        vec![sunday],
        "the full is never superseded"
    );
    // The incr's longest gap is two days (Saturday to Monday, Tuesday to Thursday), not one.
    assert_eq!(
        s.max_interval(JobKind::BackupIncr, from, 30),
        Some(chrono::Duration::days(2))
    );
    assert_eq!(
        s.max_interval(JobKind::Backup, from, 30),
        Some(chrono::Duration::days(7))
    );
}

#[test]
fn after_downtime_pending_backups_collapse_into_the_biggest() {
    // The daemon was down over the Sunday full and two incrs: one full runs, not a full and an incr.
    let now = utc("2026-01-06T09:00:00Z");
    let list = [(JobKind::BackupIncr, "0 1 * * *"), (JobKind::Backup, "0 1 * * 0")];
    let mut s = Scheduler::new(ScheduleZone::Utc, jobs(&list), now, |k| match k {
        JobKind::Backup => Some(utc("2025-12-28T01:10:00Z")),
        _ => Some(utc("2026-01-03T01:05:00Z")),
    });
    let due = s.take_due(now).unwrap();
    assert_eq!(
        due.kind,
        JobKind::Backup,
        "the full wins although the incr's slot is older"
    );
    assert_eq!(due.superseded, vec![(JobKind::BackupIncr, utc("2026-01-06T01:00:00Z"))]);
    s.finish(JobKind::Backup, now, utc("2026-01-06T09:30:00Z"));
    assert!(s.take_due(utc("2026-01-06T09:30:00Z")).is_none());
    assert_eq!(s.next_wake(), Some(utc("2026-01-07T01:00:00Z")));
    // A smaller backup due alone is not held back by a bigger one that is not due.
    let mut s = Scheduler::new(ScheduleZone::Utc, jobs(&list), now, |_| {
        Some(utc("2026-01-05T01:05:00Z"))
    });
    let due = s.take_due(utc("2026-01-07T01:00:00Z")).unwrap();
    assert_eq!((due.kind, due.superseded.len()), (JobKind::BackupIncr, 0));
}

#[test]
fn supersedes_is_full_over_diff_over_incr_and_only_between_backups() {
    use JobKind::*;
    assert!(Backup.supersedes(BackupDiff) && Backup.supersedes(BackupIncr) && BackupDiff.supersedes(BackupIncr));
    assert!(!BackupIncr.supersedes(Backup) && !BackupDiff.supersedes(Backup) && !Backup.supersedes(Backup));
    assert!(!Backup.supersedes(Expire) && !Expire.supersedes(Verify));
    for k in JobKind::ALL {
        if let Some(b) = k.backup_kind() {
            assert_eq!(JobKind::of_backup(b), k);
        }
    }
}

#[test]
fn smaller_backup_slots_passing_while_a_bigger_backup_runs_are_served_by_it() {
    let list = [(JobKind::BackupIncr, "0 * * * *"), (JobKind::Backup, "0 1 * * *")];
    let mut s = Scheduler::new(ScheduleZone::Utc, jobs(&list), utc("2026-01-01T00:30:00Z"), |_| None);
    let t0 = utc("2026-01-01T01:00:00Z");
    let due = s.take_due(t0).unwrap();
    assert_eq!(due.kind, JobKind::Backup);
    assert_eq!(due.superseded, vec![(JobKind::BackupIncr, t0)]);
    assert!(s.take_superseded().is_empty());
    // The full runs until 03:10: the incr's 02:00 and 03:00 slots pass meanwhile.
    let end = utc("2026-01-01T03:10:00Z");
    assert_eq!(s.finish(JobKind::Backup, t0, end), 0);
    assert_eq!(
        s.take_superseded(),
        vec![(JobKind::BackupIncr, utc("2026-01-01T03:00:00Z"))]
    );
    assert!(s.take_superseded().is_empty(), "taken once");
    assert!(s.take_due(end).is_none(), "no incr right after the full");
    assert_eq!(s.next_wake(), Some(utc("2026-01-01T04:00:00Z")));
    // The other way round an incr holds nothing back: a full due during it runs after it.
    let t1 = utc("2026-01-02T00:00:00Z");
    let due = s.take_due(t1).unwrap();
    assert_eq!(due.kind, JobKind::BackupIncr);
    s.finish(JobKind::BackupIncr, t1, utc("2026-01-02T01:20:00Z"));
    assert!(s.take_superseded().is_empty());
    assert_eq!(s.take_due(utc("2026-01-02T01:20:00Z")).unwrap().kind, JobKind::Backup);
}
