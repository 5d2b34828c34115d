//! Restore recovers exactly to the point asked for, or refuses (issue 6): what PostgreSQL itself
//! does with what `pgvault restore` wrote, on every supported version (15, 16, 17, 18).
//!
//! - `restore_of_restore`: a cluster restored to a time, promoted, backed up and written to is
//!   restored again with no target: every row of it comes back (the first restore's stale
//!   `recovery_target_*` lines travel inside the second backup and used to stop recovery at the
//!   old time); then restored to new time and LSN targets: the server starts (no "multiple
//!   recovery targets") with exactly the rows before them.
//! - `archive_gap`: one archived segment removed by hand. Restore without a target (or with one
//!   beyond the gap) refuses, naming the segment and the furthest reachable point, and writes
//!   nothing; targets before the gap restore the right rows; `list` shows the window split at the
//!   gap; PostgreSQL fetches the segments the dry run announced and nothing else but history
//!   probes and read-ahead; a backup taken after the gap makes the rest recoverable again.
//! - `branches`: two restores of one backup to T1 < T2, promoted on timelines 2 and 3 and
//!   written to, a backup on timeline 3: `--target-timeline 2` restores branch 2's rows from the
//!   timeline-1 backup (never the timeline-3 one, which finished earlier than the target),
//!   `--target-timeline 3` branch 3's; `--dry-run` reports backup, timeline path, segments, bytes
//!   and reach, and writes nothing; across the switch point PostgreSQL fetches exactly the
//!   segments it planned (plus history probes and read-ahead).
//! - `archive_off_and_standby`: `--archive-mode off` gives a promoted cluster that archives
//!   nothing into the repository; `--type standby` a server that stays in recovery and follows
//!   the archive.
//!
//! Every scenario writes a few rows per phase and switches WAL by hand, so each version runs in
//! well under a minute.

mod recovery_common;

use anyhow::{Context, Result};
use pgvault_core::lsn::Lsn;
use pgvault_tests::{archiving_cluster, per_pg_version, ClusterOptions, CmdOutput, PgInstall, Vault};
use recovery_common::*;

per_pg_version!(restore_of_restore, restore_of_restore_test);
per_pg_version!(archive_gap, archive_gap_test);
per_pg_version!(branches, branches_test);
per_pg_version!(archive_off_and_standby, archive_off_and_standby_test);

async fn restore_of_restore_test(install: PgInstall) {
    restore_of_restore_scenario(install)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

async fn archive_gap_test(install: PgInstall) {
    archive_gap_scenario(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn branches_test(install: PgInstall) {
    branches_scenario(install).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn archive_off_and_standby_test(install: PgInstall) {
    archive_off_and_standby_scenario(install)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

async fn restore_of_restore_scenario(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let mut a = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    create_table(&a).await?;
    vault.backup(&[])?;
    insert_phase(&a, "r1").await?;
    let t = server_time_between(&a).await?;
    insert_phase(&a, "r2").await?;
    switch_and_archive(&a).await?;
    a.stop()?;

    // B: restored to T, promoted onto timeline 2, archiving into the same repository.
    let (mut b, _) = restore_and_promote(&install, &vault, "b", &["--target-time", &t], true).await?;
    assert_eq!(phases(&b).await?, "base:1 r1:10", "the first restore stops at {t}");
    vault.write_config(&b, "")?;
    let b_backup = vault.backup(&[])?;
    insert_phase(&b, "r3a").await?;
    let lsn_mid = b.current_lsn().await?;
    let t_mid = server_time_between(&b).await?;
    insert_phase(&b, "r3b").await?;
    let last = switch_and_archive(&b).await?;
    assert!(last.starts_with("00000002"), "B archives on timeline 2 (got {last})");
    let all_of_b = phases(&b).await?;
    assert_eq!(all_of_b, "base:1 r1:10 r3a:10 r3b:10", "B holds its own rows");
    b.stop()?;

    // C: no target. Every row of B, not a stop at B's own (stale) target time.
    let (c, out) = restore_and_promote(&install, &vault, "c", &[], false).await?;
    assert!(
        out.stdout.contains(&b_backup),
        "without a target the newest backup ({b_backup}, taken on B) is used: {out}"
    );
    assert_eq!(
        phases(&c).await?,
        all_of_b,
        "a restore without a target of B's backup must replay every archived row of B, not stop at the first restore's target {t}"
    );
    drop(c);

    // New targets on top of a backup whose configuration came from a restore: the server starts
    // (a stale recovery_target_time beside a new recovery_target_lsn is "multiple recovery
    // targets") and holds exactly the rows before the target.
    for (name, args) in [
        ("d-time", ["--target-time", t_mid.as_str()]),
        ("e-lsn", ["--target-lsn", lsn_mid.as_str()]),
    ] {
        let (c, out) = restore_and_promote(&install, &vault, name, &args, false)
            .await
            .with_context(|| format!("restore of B's lineage with {args:?}"))?;
        assert!(
            out.stdout.contains(&b_backup),
            "{args:?} is after B's backup {b_backup}, which is used: {out}"
        );
        assert_eq!(
            phases(&c).await?,
            "base:1 r1:10 r3a:10",
            "restore of B's lineage with {args:?}"
        );
    }
    Ok(())
}

/// Restores that must be refused because of the gap at `missing`: exit 1, the segment and a
/// reachable point before it named, nothing written.
fn assert_refused_at_gap(vault: &Vault, name: &str, args: &[&str], missing: &str, reachable_from: Lsn) -> Result<()> {
    let out = restore_raw(vault, name, args)?;
    check_refusal(vault, name, &out, missing, reachable_from)
}

fn check_refusal(vault: &Vault, name: &str, out: &CmdOutput, missing: &str, reachable_from: Lsn) -> Result<()> {
    assert!(
        !out.success(),
        "restore into {name} must be refused: segment {missing} is missing from the archive: {out}"
    );
    assert_eq!(out.code(), Some(1), "a refusal exits 1: {out}");
    assert!(
        out.stderr.contains(missing),
        "the refusal names the first missing segment {missing}: {out}"
    );
    let gap_start = segment_start(missing)?;
    assert!(
        lsns_in(&out.stderr)
            .iter()
            .any(|l| *l >= reachable_from && *l <= gap_start),
        "the refusal names the furthest reachable point (between {reachable_from} and {gap_start}): {out}"
    );
    assert_nothing_written(&vault.restore_path(name), out);
    Ok(())
}

async fn archive_gap_scenario(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let a = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    create_table(&a).await?;
    let first_backup = vault.backup(&[])?;
    insert_phase(&a, "g1").await?;
    let t_g1 = server_time_between(&a).await?;
    insert_phase(&a, "g2").await?;
    let lsn_g2 = a.current_lsn().await?;
    let before_gap = switch_and_archive(&a).await?;
    insert_phase(&a, "g3").await?;
    let missing = switch_and_archive(&a).await?;
    insert_phase(&a, "g4").await?;
    let lsn_g4 = a.current_lsn().await?;
    switch_and_archive(&a).await?;
    insert_phase(&a, "g5").await?;
    let last = switch_and_archive(&a).await?;
    assert!(
        before_gap < missing && missing < last,
        "the missing segment is in the middle: {before_gap} < {missing} < {last}"
    );
    remove_archived_segment(&vault, &missing)?;
    let reachable_from: Lsn = lsn_g2.parse().context("lsn")?;

    // No target: refused, naming the gap; nothing written.
    let out = restore_raw(&vault, "no-target", &[])?;
    if out.success() {
        let rows = silently_recovered_rows(&install, &vault, "no-target").await;
        panic!("restore without a target succeeded although {missing} is missing; PostgreSQL then recovers to {rows} (g3..g5 silently lost)\n{out}");
    }
    check_refusal(&vault, "no-target", &out, &missing, reachable_from)?;
    // A target beyond the gap: the same.
    assert_refused_at_gap(
        &vault,
        "beyond-gap",
        &["--target-lsn", &lsn_g4],
        &missing,
        reachable_from,
    )?;

    // Targets before the gap restore exactly their rows; PostgreSQL fetches what the dry run said.
    let args = ["--target-lsn", lsn_g2.as_str()];
    let dry = restore_raw(&vault, "by-lsn", &[&args[..], &["--dry-run"]].concat())?.check()?;
    assert_nothing_written(&vault.restore_path("by-lsn"), &dry);
    let (c, _, fetched) = restore_logging_fetches(&install, &vault, "by-lsn", &args).await?;
    assert_eq!(
        phases(&c).await?,
        "base:1 g1:10 g2:10",
        "--target-lsn {lsn_g2} before the gap"
    );
    drop(c);
    check_fetches(&dry, &fetched)?;
    let (c, _) = restore_and_promote(&install, &vault, "by-time", &["--target-time", &t_g1], false).await?;
    assert_eq!(phases(&c).await?, "base:1 g1:10", "--target-time {t_g1} before the gap");
    drop(c);

    // list: the window ends at the gap.
    let w = windows(&vault.list()?)?;
    let before: Vec<_> = w.iter().filter(|w| w.timeline == 1).collect();
    assert_eq!(before.len(), 1, "one window on timeline 1, ending at the gap: {w:?}");
    assert_eq!(
        before[0].ends_at_gap.as_deref(),
        Some(missing.as_str()),
        "the window ends at {missing}: {w:?}"
    );
    let end: Lsn = before[0].end_lsn.parse().context("end_lsn")?;
    assert!(
        end >= reachable_from && end <= segment_start(&missing)?,
        "the window ends before {missing}: {w:?}"
    );
    let text = vault.pgvault(["list"])?.check()?;
    assert!(text.stdout.contains(&missing), "`pgvault list` names the gap: {text}");

    // A backup after the gap: a second window, and a restore without a target reaches the end.
    insert_phase(&a, "g6").await?;
    let second_backup = vault.backup(&[])?;
    // Something to switch away from: the backup may have switched WAL itself.
    insert_phase(&a, "g7").await?;
    switch_and_archive(&a).await?;
    let w = windows(&vault.list()?)?;
    assert_eq!(w.len(), 2, "the window is split at the gap: {w:?}");
    assert_eq!(
        w[0].ends_at_gap.as_deref(),
        Some(missing.as_str()),
        "the first window ends at the gap: {w:?}"
    );
    assert_eq!(
        w[1].ends_at_gap, None,
        "the second window reaches the end of the archive: {w:?}"
    );
    assert!(
        w[1].start_lsn.parse::<Lsn>().context("start_lsn")? > segment_start(&missing)?,
        "the second window starts after the gap: {w:?}"
    );
    assert_refused_at_gap(
        &vault,
        "first-backup",
        &["--backup", &first_backup],
        &missing,
        reachable_from,
    )?;
    let (c, out) = restore_and_promote(&install, &vault, "after-gap", &[], false).await?;
    assert!(
        out.stdout.contains(&second_backup),
        "the backup after the gap is used: {out}"
    );
    assert_eq!(
        phases(&c).await?,
        "base:1 g1:10 g2:10 g3:10 g4:10 g5:10 g6:10 g7:10",
        "restore from the backup after the gap"
    );
    Ok(())
}

async fn branches_scenario(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let mut a = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    create_table(&a).await?;
    let tl1_backup = vault.backup(&[])?;
    insert_phase(&a, "r1").await?;
    let t1 = server_time_between(&a).await?;
    insert_phase(&a, "r2").await?;
    let t2 = server_time_between(&a).await?;
    insert_phase(&a, "r3").await?;
    switch_and_archive(&a).await?;
    a.stop()?;

    // Branch 2: to T1, promoted (timeline 2), written to.
    let (x, _) = restore_and_promote(&install, &vault, "x", &["--target-time", &t1], true).await?;
    insert_phase(&x, "x1").await?;
    let seg = switch_and_archive(&x).await?;
    assert!(seg.starts_with("00000002"), "the first branch is timeline 2 ({seg})");
    // Branch 3: to T2 along timeline 1, promoted (timeline 3: 2 is taken), written to, backed up.
    let (y, _) = restore_and_promote(
        &install,
        &vault,
        "y",
        &["--target-time", &t2, "--target-timeline", "1"],
        true,
    )
    .await?;
    insert_phase(&y, "y1").await?;
    vault.write_config(&y, "")?;
    let tl3_backup = vault.backup(&[])?;
    insert_phase(&y, "y2").await?;
    let seg = switch_and_archive(&y).await?;
    assert!(seg.starts_with("00000003"), "the second branch is timeline 3 ({seg})");
    // More on branch 2, after the timeline-3 backup finished: a target there is later than that
    // backup, which is nevertheless not on the way to timeline 2.
    insert_phase(&x, "x2").await?;
    let t_x = server_time_between(&x).await?;
    insert_phase(&x, "x3").await?;
    switch_and_archive(&x).await?;
    drop((x, y));

    let along2 = ["--target-timeline", "2", "--target-time", t_x.as_str()];
    let dry = dry_run_check(&vault, &along2, &tl1_backup, &tl3_backup)?;
    let (c, out, fetched) = restore_logging_fetches(&install, &vault, "along2", &along2).await?;
    assert!(
        out.stdout.contains(&tl1_backup) && !out.stdout.contains(&tl3_backup),
        "timeline 2 is restored from the timeline-1 backup {tl1_backup}, never {tl3_backup} of timeline 3: {out}"
    );
    assert_eq!(
        phases(&c).await?,
        "base:1 r1:10 x1:10 x2:10",
        "--target-timeline 2 gives branch 2's rows"
    );
    drop(c);
    // Across the switch point: what the dry run planned is what PostgreSQL read.
    check_fetches(&dry, &fetched)?;
    let (c, _) = restore_and_promote(&install, &vault, "along3", &["--target-timeline", "3"], false).await?;
    assert_eq!(
        phases(&c).await?,
        "base:1 r1:10 r2:10 y1:10 y2:10",
        "--target-timeline 3 gives branch 3's rows"
    );
    Ok(())
}

/// `restore --dry-run` for timeline 2: the backup, the timeline path 1 → 2, segments, bytes and
/// the furthest reachable point; exit 0 and nothing written.
fn dry_run_check(vault: &Vault, args: &[&str], expected_backup: &str, wrong_backup: &str) -> Result<CmdOutput> {
    let out = restore_raw(vault, "dry", &[args, &["--dry-run"]].concat())?;
    assert_eq!(out.code(), Some(0), "the dry run succeeds: {out}");
    assert_nothing_written(&vault.restore_path("dry"), &out);
    assert!(
        out.stdout.contains(expected_backup) && !out.stdout.contains(wrong_backup),
        "the dry run names backup {expected_backup}: {out}"
    );
    let report = DryRun::parse(&out)?;
    assert_eq!(
        report.timelines,
        [1, 2],
        "the timeline path is 1 -> 2 (\"{}\")",
        report.timeline_line
    );
    assert!(report.segments > 0, "the dry run counts the segments it needs: {out}");
    assert!(
        ["bytes", "KiB", "MiB", "GiB"].iter().any(|u| out.stdout.contains(u)),
        "the dry run gives the bytes to fetch: {out}"
    );
    assert!(
        !lsns_in(&report.reach_line).is_empty(),
        "the furthest reachable point is an LSN: \"{}\"",
        report.reach_line
    );
    Ok(out)
}

async fn archive_off_and_standby_scenario(install: PgInstall) -> Result<()> {
    let vault = Vault::new()?;
    let a = archiving_cluster(&install, &vault, ClusterOptions::default()).await?;
    create_table(&a).await?;
    vault.backup(&[])?;
    insert_phase(&a, "s1").await?;
    switch_and_archive(&a).await?;

    // --archive-mode off: promoted onto timeline 2 without pushing anything.
    let (mut c, out) = restore_as_is(&install, &vault, "archive-off", &["--archive-mode", "off"])?;
    c.start()?;
    c.wait_for_recovery_end(RECOVERY).await?;
    let mode: String = c.query_scalar("SHOW archive_mode").await?;
    assert_eq!(mode, "off", "--archive-mode off: {out}");
    assert_eq!(phases(&c).await?, "base:1 s1:10");
    // The timeline the promoted copy writes on (its name's first 8 digits); pg_control only
    // learns it at the next checkpoint.
    let current: String = c.query_scalar("SELECT pg_walfile_name(pg_current_wal_lsn())").await?;
    let tli = current.get(..8).context("a WAL file name")?;
    assert_ne!(tli, "00000001", "the promoted copy is on a new timeline");
    let history = format!("{tli}.history");
    insert_phase(&c, "off").await?;
    let seg = c.switch_wal().await?;
    // Time for an archiver to push, if there were one: the history file goes first.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        !archived(&vault, &history)?,
        "a copy restored with --archive-mode off pushed {history} into the repository"
    );
    assert!(
        !archived(&vault, &seg)?,
        "a copy restored with --archive-mode off pushed {seg} into the repository"
    );
    let pushed: i64 = c
        .query_scalar("SELECT archived_count + failed_count FROM pg_stat_archiver")
        .await?;
    assert_eq!(
        pushed, 0,
        "a copy restored with --archive-mode off runs no archive_command"
    );
    drop(c);

    // --type standby: stays in recovery and follows the archive.
    let (mut s, out) = restore_as_is(&install, &vault, "standby", &["--type", "standby"])?;
    assert!(
        s.data_dir().join("standby.signal").is_file(),
        "--type standby writes standby.signal: {out}"
    );
    assert!(
        !s.data_dir().join("recovery.signal").exists(),
        "and no recovery.signal: {out}"
    );
    s.start()?;
    assert!(s.is_in_recovery().await?, "the standby is in recovery");
    insert_phase(&a, "s2").await?;
    switch_and_archive(&a).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let rows = phases(&s).await?;
        if rows == "base:1 s1:10 s2:10" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the standby did not replay the newly archived rows (has {rows})\n{}",
            s.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(
        s.is_in_recovery().await?,
        "the standby stays in recovery after replaying"
    );
    Ok(())
}
