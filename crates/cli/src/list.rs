//! `pgvault list`: backups, the WAL archive and the windows that can really be recovered to.
//!
//! Everything shown comes from the archive model ([`pgvault_core::survey`]): windows are split at
//! gaps and given per timeline, with times recorded from the server at push, so what `list`
//! promises is exactly what `restore` will accept.

use anyhow::Result;
use pgvault_core::drill::report::DrillReport;
use pgvault_core::repository::state::Pin;
use pgvault_core::repository::summary::BackupSummary;
use pgvault_core::repository::Repository;
use pgvault_core::retention::{self, ExpirePlan, Policy, PolicyOverrides};
use pgvault_core::survey::{self, Survey, Times};
use pgvault_core::timeline::{Gap, TimelineWindows, Window};
use serde_json::{json, Value};

use crate::commands::{Context, ListArgs};
use crate::display;

/// A backup as `list --json` and `backup --json` show it.
pub fn backup_json(b: &BackupSummary) -> Value {
    json!({
        "id": b.id,
        "label": b.label,
        "kind": b.kind.to_string(),
        "parent": b.parent,
        "timeline": b.timeline,
        "stop_timeline": b.stop_timeline,
        "start_lsn": b.start_lsn.to_string(),
        "stop_lsn": b.stop_lsn.to_string(),
        "start_time": b.start_time.to_rfc3339(),
        "stop_time": b.stop_time.to_rfc3339(),
        "start_wal": b.start_wal,
        "stop_wal": b.stop_wal,
        "wal_included": b.wal_included,
        "size": b.size,
        "stored_size": b.stored_size,
        "files": b.file_count,
        "pg_version_num": b.pg_version_num,
        "encrypted": b.encrypted,
        "compression": b.compression,
    })
}

fn window_json(tli: u32, w: &Window) -> Value {
    json!({
        "timeline": tli,
        "from_backup": w.from_backup,
        "backups": w.backups,
        "start_lsn": w.start_lsn.to_string(),
        "end_lsn": w.end_lsn.to_string(),
        "start_time": w.start_time.to_rfc3339(),
        "end_time": w.end_time.map(|t| t.to_rfc3339()),
        "ends_at_gap": w.ends_at_gap.map(|g| g.to_string()),
    })
}

fn gap_json(g: &Gap) -> Value {
    json!({
        "timeline": g.tli,
        "first_missing": g.first_missing.to_string(),
        "last_missing": g.last_missing.to_string(),
        "reason": g.reason,
    })
}

/// Pins and what the configured policy would do to each backup.
struct Retention {
    pins: Vec<Pin>,
    /// The reason when there is no policy (or it cannot be planned).
    plan: Result<ExpirePlan, String>,
}

impl Retention {
    fn pin(&self, id: &str) -> Option<&Pin> {
        self.pins.iter().find(|p| p.backup == id)
    }

    /// `kept: reasons` or `would expire` for backup `id`.
    fn verdict(&self, id: &str) -> Option<(bool, Vec<String>)> {
        let plan = self.plan.as_ref().ok()?;
        if let Some(k) = plan.keep.iter().find(|k| k.id == id) {
            return Some((true, k.reasons.iter().map(|r| r.to_string()).collect()));
        }
        Some((false, Vec::new()))
    }
}

fn retention_of(
    config: &pgvault_core::config::Config,
    s: &Survey,
    pins: Result<Vec<Pin>, pgvault_core::repository::RepositoryError>,
) -> Retention {
    let wal: Vec<_> = s.wal.iter().map(|(n, o)| (*n, o.size)).collect();
    // A pin that cannot be read makes expire refuse; list still lists, and says so.
    let pins = match pins {
        Ok(p) => p,
        Err(e) => {
            return Retention {
                pins: Vec::new(),
                plan: Err(format!(
                    "the pins cannot be read ({e}); expire will refuse until this is fixed"
                )),
            }
        }
    };
    let plan = match Policy::resolve(config.retention.as_ref(), &PolicyOverrides::default()) {
        Err(e) => Err(e.to_string()),
        Ok(policy) if policy.is_empty() => Err("no [retention] policy configured: expire deletes nothing".into()),
        Ok(policy) => {
            let input = retention::PlanInput {
                backups: &s.backups,
                unreadable: &s.unreadable,
                pins: &pins,
                model: &s.model,
                wal: &wal,
                orphans: &[],
                now: chrono::Utc::now(),
            };
            retention::plan_expire(&input, &policy).map_err(|e| e.to_string())
        }
    };
    Retention { pins, plan }
}

fn pin_json(p: Option<&Pin>) -> Value {
    p.map_or(Value::Null, |p| {
        json!({"until": p.until.map(|u| u.to_rfc3339()), "note": p.note, "created_at": p.created_at.to_rfc3339(), "active": p.active_at(chrono::Utc::now())})
    })
}

pub async fn list(ctx: &Context, args: ListArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = Repository::open(&config).await?;
    let s = survey::survey(&repo, Times::WindowEnds).await?;
    let ret = retention_of(&config, &s, repo.pins().await);
    let drill = pgvault_core::drill::last_report(&repo).await.map_err(|e| e.to_string());
    let by_tli = s.model.windows_by_timeline();
    // Missing WAL wholly before the horizon was removed by `expire` on purpose, not lost.
    let horizon = repo.wal_horizon().await?;
    let seg = repo.cluster().wal_segment_size;
    let gaps: Vec<(Gap, bool)> = s
        .model
        .gaps()
        .into_iter()
        .map(|g| {
            let expired = horizon
                .as_ref()
                .is_some_and(|h| g.last_missing.segment_number(seg) < h.lsn.segment(seg));
            (g, expired)
        })
        .collect();
    let segments: Vec<_> = s.wal.iter().filter(|(n, _)| n.has_page_header()).collect();
    let latest = s.model.tree().latest();
    let latest_w: Vec<&Window> = by_tli
        .iter()
        .filter(|t| t.tli == latest)
        .flat_map(|t| t.windows.iter())
        .collect();
    if args.json {
        let out = json!({
            "repository": repo.storage().to_string(),
            "system_identifier": repo.cluster().system_identifier.to_string(),
            "pg_version_num": repo.cluster().pg_version_num,
            "format_version": repo.meta().format_version,
            "encrypted": repo.is_encrypted(),
            "backups": s.backups.iter().map(|b| {
                let mut v = backup_json(b);
                v["pin"] = pin_json(ret.pin(&b.id));
                v["retention"] = match ret.verdict(&b.id) {
                    Some((kept, reasons)) => json!({"kept": kept, "reasons": reasons}),
                    None => Value::Null,
                };
                v
            }).collect::<Vec<_>>(),
            "retention_policy": match &ret.plan {
                Ok(p) => json!({"policy": p.policy, "would_delete": p.delete_backups.iter().map(|b| &b.id).collect::<Vec<_>>(), "wal_objects_expired": p.delete_wal.len()}),
                Err(why) => json!({"policy": null, "note": why}),
            },
            "last_drill": drill_json(&drill),
            "unreadable_backups": s.unreadable.iter().map(|(id, why)| json!({"id": id, "error": why})).collect::<Vec<_>>(),
            "wal": {
                "segments": segments.len(),
                "first": segments.first().map(|s| s.0.to_string()),
                "last": segments.last().map(|s| s.0.to_string()),
                "partial": s.model.partials().map(|p| p.to_string()).collect::<Vec<_>>(),
            },
            "timelines": s.model.tree().timelines(),
            "latest_timeline": latest,
            "gaps": gaps.iter().map(|(g, expired)| { let mut v = gap_json(g); v["expired"] = json!(expired); v }).collect::<Vec<_>>(),
            "windows": by_tli.iter().flat_map(|t| t.windows.iter().map(move |w| window_json(t.tli, w))).collect::<Vec<_>>(),
            "recoverable_window": {
                "timeline": latest,
                "from": latest_w.first().map(|w| w.start_time.to_rfc3339()),
                "to": latest_w.last().and_then(|w| w.end_time).map(|t| t.to_rfc3339()),
                "to_lsn": latest_w.last().map(|w| w.end_lsn.to_string()),
            },
        });
        return display::print_json(&out);
    }
    print_human(&repo, &s, &by_tli, &gaps, &segments);
    print_retention(&s, &ret);
    print_drill(&drill);
    Ok(())
}

fn drill_json(d: &Result<Option<DrillReport>, String>) -> Value {
    match d {
        Ok(Some(r)) => json!({
            "id": r.id,
            "started_at": r.started_at.to_rfc3339(),
            "passed": r.passed,
            "backup": r.backup,
            "target": r.target,
            "rto_seconds": r.rto_seconds,
            "rpo_seconds": r.rpo_seconds,
            "failures": r.failures(),
        }),
        Ok(None) => Value::Null,
        Err(why) => json!({ "error": why }),
    }
}

fn print_drill(d: &Result<Option<DrillReport>, String>) {
    match d {
        Ok(Some(r)) => {
            let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.1}s"));
            println!(
                "last drill: {} {} (backup {}, RTO {}, RPO {})",
                r.id,
                if r.passed { "PASSED" } else { "FAILED" },
                r.backup.as_deref().unwrap_or("-"),
                secs(r.rto_seconds),
                secs(r.rpo_seconds)
            );
            for f in r.failures() {
                println!("  {f}");
            }
        }
        Ok(None) => println!("last drill: none yet (run `pgvault drill`)"),
        Err(why) => println!("last drill: {why}"),
    }
}

fn print_human(
    repo: &Repository,
    s: &Survey,
    by_tli: &[TimelineWindows],
    gaps: &[(Gap, bool)],
    segments: &[&(pgvault_core::wal::WalFileName, pgvault_core::storage::ObjectInfo)],
) {
    println!(
        "repository {} (cluster {}, PostgreSQL {})",
        repo.storage(),
        repo.cluster().system_identifier,
        repo.cluster().major()
    );
    if s.backups.is_empty() {
        println!("no backups yet: run `pgvault backup`");
    } else {
        println!(
            "{:<17} {:<5} {:<25} {:<25} {:<23} {:>10} {:>10}",
            "BACKUP", "TLI", "STARTED", "FINISHED", "LSN RANGE", "SIZE", "STORED"
        );
        for b in &s.backups {
            let tli = if b.timeline == b.stop_timeline {
                b.timeline.to_string()
            } else {
                format!("{}>{}", b.timeline, b.stop_timeline)
            };
            println!(
                "{:<17} {:<5} {:<25} {:<25} {:<23} {:>10} {:>10}{}",
                b.id,
                tli,
                b.start_time.format("%Y-%m-%d %H:%M:%S%:z").to_string(),
                b.stop_time.format("%Y-%m-%d %H:%M:%S%:z").to_string(),
                format!("{}-{}", b.start_lsn, b.stop_lsn),
                display::bytes(b.size),
                display::bytes(b.stored_size),
                if b.wal_included { "  (WAL included)" } else { "" }
            );
            if let Some(parent) = &b.parent {
                println!("{:<17} {} of {parent}", "", b.kind);
            }
        }
    }
    for (id, why) in &s.unreadable {
        println!("{id:<17} UNREADABLE: {why}");
    }
    match (segments.first(), segments.last()) {
        (Some(f), Some(l)) => println!("WAL archive: {} segments, {} .. {}", segments.len(), f.0, l.0),
        _ => println!("WAL archive: empty"),
    }
    for (g, expired) in gaps {
        let what = if g.first_missing == g.last_missing {
            format!("{} is missing", g.first_missing)
        } else {
            format!("{} .. {} are missing", g.first_missing, g.last_missing)
        };
        if *expired {
            println!(
                "expired on timeline {}: {what} (removed by expire; older backups restore to their end point)",
                g.tli
            );
        } else {
            let why = g
                .reason
                .as_deref()
                .map(|r| format!(" ({r}; take a new full backup)"))
                .unwrap_or_default();
            println!("GAP on timeline {}: {what}{why}", g.tli);
        }
    }
    let latest = s.model.tree().latest();
    for t in by_tli {
        for w in &t.windows {
            let end_time = w
                .end_time
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "(time not recorded)".into());
            println!(
                "recoverable{}: timeline {} from {} ({}) to {} ({}){}",
                if t.tli == latest { " (latest)" } else { "" },
                t.tli,
                w.start_time.to_rfc3339(),
                w.start_lsn,
                end_time,
                w.end_lsn,
                w.ends_at_gap
                    .map(|g| format!(", then a gap at {g}"))
                    .unwrap_or_default()
            );
        }
    }
}

fn print_retention(s: &Survey, ret: &Retention) {
    let now = chrono::Utc::now();
    for p in &ret.pins {
        let state = if p.active_at(now) { "pinned" } else { "pin lapsed" };
        let gone = if s.backup(&p.backup).is_none() {
            " (backup not found)"
        } else {
            ""
        };
        println!(
            "{state}: {}{}{}{gone}",
            p.backup,
            p.until
                .map(|u| format!(" until {}", u.to_rfc3339()))
                .unwrap_or_default(),
            p.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    match &ret.plan {
        Err(why) => println!("retention: {why}"),
        Ok(plan) => {
            println!("retention ({}):", plan.policy);
            for b in &s.backups {
                match ret.verdict(&b.id) {
                    Some((true, reasons)) => println!("  {:<17} kept: {}", b.id, reasons.join(", ")),
                    _ => println!("  {:<17} would expire at the next `pgvault expire`", b.id),
                }
            }
        }
    }
}
