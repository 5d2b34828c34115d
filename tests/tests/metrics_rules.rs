//! The alert rules pgvault ships (`pgvault_core::metrics::ALERT_RULES`, the text `pgvault deploy`
//! writes) pass `promtool check rules`, and their unit tests (`ALERT_RULES_TEST`: each alert
//! fires on the series that should fire it, silent on a healthy one) pass `promtool test rules`.
//! No PostgreSQL needed.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use pgvault_core::metrics::{ALERT_RULES, ALERT_RULES_TEST};
use pgvault_tests::{checker, run_with_timeout, Checker};

#[test]
fn alert_rules_check_and_their_unit_tests_pass() -> Result<()> {
    let Some(promtool) = checker(Checker::Promtool) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("alert_rules.yml"), ALERT_RULES)?;
    std::fs::write(dir.path().join("alert_rules_test.yml"), ALERT_RULES_TEST)?;
    let out = run_with_timeout(
        Command::new(&promtool)
            .args(["check", "rules", "alert_rules.yml"])
            .current_dir(dir.path()),
        Duration::from_secs(60),
    )?;
    ensure!(out.success(), "promtool check rules: {out}");
    // Every rule in the file is loaded (a rule promtool skipped would not be counted).
    let rules = ALERT_RULES
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    ensure!(rules >= 10, "the rule file lost rules: {rules}");
    ensure!(out.stdout.contains(&format!("SUCCESS: {rules} rules found")), "{out}");
    let out = run_with_timeout(
        Command::new(&promtool)
            .args(["test", "rules", "alert_rules_test.yml"])
            .current_dir(dir.path()),
        Duration::from_secs(60),
    )?;
    ensure!(out.success(), "promtool test rules: {out}");
    // The tests can fail: a rule that never fires is caught.
    std::fs::write(
        dir.path().join("alert_rules.yml"),
        ALERT_RULES.replace("pgvault_drill_last_success == 0", "pgvault_drill_last_success == 2"),
    )?;
    let out = run_with_timeout(
        Command::new(&promtool)
            .args(["test", "rules", "alert_rules_test.yml"])
            .current_dir(dir.path()),
        Duration::from_secs(60),
    )?;
    ensure!(
        !out.success() && out.to_string().contains("PgvaultDrillFailed"),
        "{out}"
    );
    Ok(())
}
