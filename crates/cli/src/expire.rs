//! `pgvault expire`, `delete`, `pin` and `unpin`: the retention lifecycle's commands.
//!
//! The library plans and executes ([`pgvault_core::retention`]); this shows the plan (backups
//! to delete and why, WAL runs per timeline, bytes freed, orphans) and the recovery windows
//! before and after, as text or `--json`.

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use pgvault_core::repository::state::Pin;
use pgvault_core::repository::Repository;
use pgvault_core::retention::{self, ExpirePlan, Policy, PolicyOverrides};
use pgvault_core::timeline::TimelineWindows;
use pgvault_core::units;
use serde_json::{json, Value};

use crate::commands::Context;
use crate::display;

#[derive(Args)]
pub struct ExpireArgs {
    /// Show the plan, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Keep the newest N full backups (overrides [retention] keep_full).
    #[arg(long, value_name = "N")]
    keep_full: Option<u32>,
    /// Keep every point of this span restorable, e.g. 7d, 36h (overrides recovery_window).
    #[arg(long, value_name = "DURATION")]
    recovery_window: Option<String>,
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Remove orphaned backup directories only once older than this (default 24h).
    #[arg(long, value_name = "DURATION")]
    orphan_min_age: Option<String>,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// The backup to delete.
    id: String,
    /// Show what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable output (the same document as `expire --json`).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PinArgs {
    /// The backup retention must never delete.
    id: String,
    /// The pin lapses then: a date (2027-01-31), a time (RFC 3339) or a span from now (90d).
    #[arg(long, value_name = "DATE|DURATION")]
    until: Option<String>,
    /// Why it is pinned (shown by `list`).
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UnpinArgs {
    id: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub async fn expire(ctx: &Context, a: ExpireArgs) -> Result<()> {
    let config = ctx.config()?;
    let over = PolicyOverrides {
        keep_full: a.keep_full,
        recovery_window: a.recovery_window,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        orphan_min_age: a.orphan_min_age,
    };
    let policy = Policy::resolve(config.retention.as_ref(), &over).context("retention policy")?;
    let repo = Repository::open(&config).await?;
    let out = retention::expire(&repo, &policy, Utc::now(), a.dry_run).await?;
    show(&out.plan, out.applied, a.json)
}

pub async fn delete(ctx: &Context, a: DeleteArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let out = retention::delete(&repo, &a.id, Utc::now(), a.dry_run).await?;
    show(&out.plan, out.applied, a.json)
}

pub async fn pin(ctx: &Context, a: PinArgs) -> Result<()> {
    let config = ctx.config()?;
    let now = Utc::now();
    let until = a.until.as_deref().map(|u| parse_until(u, now)).transpose()?;
    if until.is_some_and(|u| u <= now) {
        bail!("--until lies in the past: the pin would protect nothing");
    }
    let repo = Repository::open(&config).await?;
    let pin = Pin {
        backup: a.id.clone(),
        created_at: now,
        until,
        note: a.note,
    };
    retention::pin(&repo, &pin).await?;
    if a.json {
        return display::print_json(&json!({
            "backup": a.id,
            "pinned": true,
            "until": until.map(|u| u.to_rfc3339()),
            "note": pin.note,
            "created_at": now.to_rfc3339(),
        }));
    }
    match until {
        Some(u) => println!("pinned {} until {}", a.id, u.to_rfc3339()),
        None => println!("pinned {} (until `pgvault unpin {}`)", a.id, a.id),
    }
    Ok(())
}

pub async fn unpin(ctx: &Context, a: UnpinArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let was_pinned = retention::unpin(&repo, &a.id).await?;
    if a.json {
        return display::print_json(&json!({ "backup": a.id, "pinned": false, "was_pinned": was_pinned }));
    }
    if was_pinned {
        println!("unpinned {}: retention treats it like any other backup now", a.id);
    } else {
        println!("{} was not pinned", a.id);
    }
    Ok(())
}

/// `2027-01-31` (midnight UTC), an RFC 3339 time, or a duration from now (`90d`).
fn parse_until(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    match units::parse_duration(s) {
        Ok(d) => Ok(now + chrono::Duration::from_std(d).context("--until is too far away")?),
        Err(e) => bail!("--until {s}: not a date (2027-01-31), a time (RFC 3339) or a duration: {e}"),
    }
}

pub fn windows_json(by_tli: &[TimelineWindows]) -> Value {
    by_tli
        .iter()
        .flat_map(|t| {
            t.windows.iter().map(move |w| {
                json!({
                    "timeline": t.tli,
                    "from_backup": w.from_backup,
                    "backups": w.backups,
                    "start_lsn": w.start_lsn.to_string(),
                    "start_time": w.start_time.to_rfc3339(),
                    "end_lsn": w.end_lsn.to_string(),
                    "end_time": w.end_time.map(|t| t.to_rfc3339()),
                })
            })
        })
        .collect()
}

pub fn print_windows(by_tli: &[TimelineWindows], indent: &str) {
    let mut any = false;
    for t in by_tli {
        for w in &t.windows {
            any = true;
            let end = w
                .end_time
                .map(|e| format!("{} ({})", e.format("%Y-%m-%d %H:%M:%S UTC"), w.end_lsn))
                .unwrap_or_else(|| format!("LSN {}", w.end_lsn));
            println!(
                "{indent}timeline {}: {} ({}) .. {}  [from {}]",
                t.tli,
                w.start_time.format("%Y-%m-%d %H:%M:%S UTC"),
                w.start_lsn,
                end,
                w.from_backup
            );
        }
    }
    if !any {
        println!("{indent}(nothing recoverable)");
    }
}

fn plan_json(plan: &ExpirePlan, applied: bool) -> Value {
    json!({
        "policy": plan.policy,
        "now": plan.now.to_rfc3339(),
        "applied": applied,
        "delete_backups": plan.delete_backups,
        "keep": plan.keep.iter().map(|k| json!({
            "id": k.id,
            "continuous_wal": k.continuous,
            "reasons": k.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "rules": k.reasons,
        })).collect::<Vec<_>>(),
        "delete_wal": plan.wal_ranges,
        "delete_wal_objects": plan.delete_wal.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "wal_horizon": plan.horizon.as_ref().map(|h| json!({
            "backup": h.backup, "timeline": h.timeline, "lsn": h.lsn.to_string(),
        })),
        "orphans": plan.orphans,
        "bytes_freed": plan.bytes_freed,
        "warnings": plan.warnings,
        "window_before": windows_json(&plan.window_before),
        "window_after": windows_json(&plan.window_after),
    })
}

fn show(plan: &ExpirePlan, applied: bool, as_json: bool) -> Result<()> {
    if as_json {
        return display::print_json(&plan_json(plan, applied));
    }
    println!("policy: {}", plan.policy);
    if plan.delete_backups.is_empty() {
        println!("backups to delete: none");
    } else {
        println!("backups to delete ({}):", plan.delete_backups.len());
        for b in &plan.delete_backups {
            println!(
                "  {}  ended {}  {}  ({})",
                b.id,
                b.stop_time.format("%Y-%m-%d %H:%M:%S UTC"),
                units::format_size_rough(b.stored_size),
                b.why
            );
        }
    }
    println!("backups kept ({}):", plan.keep.len());
    for k in &plan.keep {
        let reasons: Vec<String> = k.reasons.iter().map(|r| r.to_string()).collect();
        let wal = if k.continuous {
            "continuous WAL"
        } else {
            "own WAL only (restorable to its end)"
        };
        println!("  {}  {}  [{wal}]", k.id, reasons.join(", "));
    }
    if plan.wal_ranges.is_empty() {
        println!("WAL to delete: none");
    } else {
        println!("WAL to delete ({} objects):", plan.delete_wal.len());
        for r in &plan.wal_ranges {
            println!(
                "  timeline {}: {} .. {}  ({} objects, {})",
                r.timeline,
                r.first,
                r.last,
                r.objects,
                units::format_size_rough(r.bytes)
            );
        }
    }
    if let Some(h) = &plan.horizon {
        println!(
            "continuous WAL kept from the start of {} (timeline {}, {})",
            h.backup, h.timeline, h.lsn
        );
    }
    for o in &plan.orphans {
        println!(
            "orphaned backup directory {} ({} objects, {}, newest {}): {}",
            o.dir.id,
            o.dir.objects,
            units::format_size_rough(o.dir.bytes),
            o.dir.newest.format("%Y-%m-%d %H:%M:%S UTC"),
            if o.remove {
                "removed (older than the safety age)"
            } else {
                "kept for now (younger than the safety age; a backup may be writing it)"
            }
        );
    }
    for w in &plan.warnings {
        println!("warning: {w}");
    }
    println!("recovery window before:");
    print_windows(&plan.window_before, "  ");
    println!("recovery window after:");
    print_windows(&plan.window_after, "  ");
    let verb = if applied { "freed" } else { "would free" };
    println!("{verb} {}", units::format_size_rough(plan.bytes_freed));
    if !applied {
        println!("dry run: nothing was deleted");
    }
    Ok(())
}
