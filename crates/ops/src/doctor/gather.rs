//! The gathering phase of `pgvault doctor`: reads the server (one SQL connection from
//! `[postgres]`), its `pg_hba.conf` when the catalog view is closed to us but the file is local,
//! the repository (last backup, last drill) and the machine (memory and CPUs, for `tune`'s
//! advice) into [`Facts`]. Only a server that cannot be reached is an error; everything else that
//! cannot be read becomes a fact the rules report as "not checked".

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgvault_core::config::Config;
use pgvault_core::protocol::Connection;
use pgvault_core::repository::Repository;
use pgvault_core::server::{self, ServerError};

use super::facts::{
    Archiver, Facts, HbaFacts, HbaRule, LastDrill, PasswordAudit, RepoFacts, ResourceFacts, Role, Slot, Thresholds,
};
use super::{hba, passwords};
use crate::tune::{self, Inputs, Storage, Workload};

/// Why the audit could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The server cannot be reached (exit status 1).
    #[error(transparent)]
    Connect(ServerError),
    /// A catalog every supported server has could not be read.
    #[error("PostgreSQL at {target}: {context}: {message}")]
    Query {
        target: String,
        context: &'static str,
        message: String,
    },
}

/// What the caller knows better than detection.
#[derive(Clone, Debug)]
pub struct DoctorOptions {
    /// Memory for tune's advice, bytes (default: detected when the server is on this host).
    pub memory_bytes: Option<u64>,
    pub cpus: Option<u32>,
    pub storage: Storage,
    pub workload: Workload,
    pub thresholds: Thresholds,
    /// "Now", for ages (tests fix it).
    pub now: DateTime<Utc>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            memory_bytes: None,
            cpus: None,
            storage: Storage::Ssd,
            workload: Workload::Mixed,
            thresholds: Thresholds::default(),
            now: Utc::now(),
        }
    }
}

/// Reads every fact the rules need.
pub async fn gather(config: &Config, opts: &DoctorOptions) -> Result<Facts, DoctorError> {
    let mut conn = server::connect(config, false).await.map_err(DoctorError::Connect)?;
    let target = server::describe(config);
    let server_major = conn.server_version_num() / 10000;
    let mut q = Query {
        conn: &mut conn,
        target: &target,
    };
    let settings: BTreeMap<String, String> = q
        .rows(
            "reading pg_settings",
            "SELECT name, current_setting(name) FROM pg_settings",
        )
        .await?
        .into_iter()
        .filter_map(|r| Some((col(&r, 0)?, col(&r, 1).unwrap_or_default())))
        .collect();
    let archiver = archiver(&mut q).await?;
    let slots = slots(&mut q).await?;
    let roles = roles(&mut q).await?;
    let passwords = password_audit(&mut q, &roles).await;
    let hba = hba_facts(&mut q, &settings).await;
    let _ = conn.close().await;

    let repository = repository_facts(config).await;
    let resources = resource_facts(config, opts, &settings, server_major);
    Ok(Facts {
        now: opts.now,
        server_major,
        settings,
        archiver,
        slots,
        roles,
        passwords,
        hba,
        repository,
        resources,
        thresholds: opts.thresholds,
    })
}

struct Query<'a> {
    conn: &'a mut Connection,
    target: &'a str,
}

impl Query<'_> {
    async fn rows(&mut self, context: &'static str, sql: &str) -> Result<Vec<Vec<Option<String>>>, DoctorError> {
        self.conn.simple_query(sql).await.map_err(|e| DoctorError::Query {
            target: self.target.to_string(),
            context,
            message: e.to_string(),
        })
    }
}

fn col(row: &[Option<String>], i: usize) -> Option<String> {
    row.get(i).cloned().flatten()
}

fn flag(row: &[Option<String>], i: usize) -> bool {
    matches!(col(row, i).as_deref(), Some("t" | "true"))
}

async fn archiver(q: &mut Query<'_>) -> Result<Option<Archiver>, DoctorError> {
    let rows = q
        .rows(
            "reading pg_stat_archiver",
            "SELECT failed_count::text, (last_failed_time IS NOT NULL AND (last_archived_time IS NULL \
             OR last_failed_time > last_archived_time))::text, last_failed_wal, last_archived_wal FROM pg_stat_archiver",
        )
        .await?;
    Ok(rows.first().map(|r| Archiver {
        failed_count: col(r, 0).and_then(|v| v.parse().ok()).unwrap_or(0),
        failing_now: flag(r, 1),
        last_failed_wal: col(r, 2),
        last_archived_wal: col(r, 3),
    }))
}

async fn slots(q: &mut Query<'_>) -> Result<Vec<Slot>, DoctorError> {
    let rows = q
        .rows(
            "reading pg_replication_slots",
            "SELECT slot_name, slot_type, active::text, pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() \
             THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::bigint::text, wal_status \
             FROM pg_replication_slots",
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Slot {
            name: col(r, 0).unwrap_or_default(),
            kind: col(r, 1).unwrap_or_default(),
            active: flag(r, 2),
            retained_bytes: col(r, 3).and_then(|v| v.parse::<i64>().ok()).map(|v| v.max(0) as u64),
            wal_status: col(r, 4),
        })
        .collect())
}

async fn roles(q: &mut Query<'_>) -> Result<Vec<Role>, DoctorError> {
    let rows = q
        .rows(
            "reading pg_roles",
            "SELECT rolname, rolsuper::text, rolcanlogin::text FROM pg_roles ORDER BY rolname",
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Role {
            name: col(r, 0).unwrap_or_default(),
            superuser: flag(r, 1),
            can_login: flag(r, 2),
        })
        .collect())
}

/// Checks the verifiers of the roles that can log in; the verifiers never leave this function.
async fn password_audit(q: &mut Query<'_>, roles: &[Role]) -> PasswordAudit {
    let sql =
        "SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin AND rolpassword IS NOT NULL ORDER BY rolname";
    let rows = match q.conn.simple_query(sql).await {
        Ok(rows) => rows,
        Err(e) => {
            let why = match e.sqlstate() {
                Some("42501") => "pg_authid is readable by superusers only".to_string(),
                _ => format!("reading pg_authid: {e}"),
            };
            return PasswordAudit::Unreadable(why);
        }
    };
    let mut weak = Vec::new();
    let mut md5 = Vec::new();
    for r in &rows {
        let (Some(role), Some(verifier)) = (col(r, 0), col(r, 1)) else {
            continue;
        };
        if !roles.iter().any(|x| x.name == role && x.can_login) {
            continue;
        }
        if passwords::is_md5(&verifier) {
            md5.push(role.clone());
        }
        if let Some(why) = passwords::weakness(&role, &verifier) {
            weak.push((role, why));
        }
    }
    PasswordAudit::Checked { weak, md5 }
}

/// `pg_hba_file_rules` (superusers), else the file itself when it is readable here.
async fn hba_facts(q: &mut Query<'_>, settings: &BTreeMap<String, String>) -> HbaFacts {
    let source = settings
        .get("hba_file")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| "pg_hba.conf".into());
    let sql = "SELECT line_number::text, type, array_to_string(database, ','), array_to_string(user_name, ','), \
               address, netmask, auth_method FROM pg_hba_file_rules WHERE error IS NULL ORDER BY line_number";
    let view_error = match q.conn.simple_query(sql).await {
        Ok(rows) => {
            let rules = rows.iter().filter_map(|r| view_rule(r)).collect();
            return HbaFacts::Read { source, rules };
        }
        Err(e) => e.to_string(),
    };
    match std::fs::read_to_string(Path::new(&source)) {
        Ok(text) => HbaFacts::Read {
            rules: hba::parse_file(&text),
            source,
        },
        Err(e) => HbaFacts::Unreadable(format!(
            "pg_hba_file_rules: {view_error}; and {source} is not readable here: {e}"
        )),
    }
}

fn view_rule(r: &[Option<String>]) -> Option<HbaRule> {
    let split = |v: Option<String>| -> Vec<String> {
        v.unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let address = col(r, 4);
    let prefix = match col(r, 5) {
        Some(mask) => hba::netmask_prefix(&mask),
        None => None,
    };
    Some(HbaRule {
        line: col(r, 0)?.parse().ok()?,
        kind: col(r, 1)?,
        databases: split(col(r, 2)),
        users: split(col(r, 3)),
        address,
        prefix,
        method: col(r, 6)?,
    })
}

async fn repository_facts(config: &Config) -> RepoFacts {
    let repo = match Repository::open(config).await {
        Ok(r) => r,
        Err(e) => return RepoFacts::Unreadable(format!("opening the repository: {e}")),
    };
    let listing = match repo.backup_summaries().await {
        Ok(l) => l,
        Err(e) => return RepoFacts::Unreadable(format!("listing backups: {e}")),
    };
    let (last_drill, drill_error) = match pgvault_core::drill::last_report(&repo).await {
        Ok(Some(r)) => (
            Some(LastDrill {
                id: r.id,
                at: r.started_at,
                passed: r.passed,
            }),
            None,
        ),
        Ok(None) => (None, None),
        Err(e) => (None, Some(e.to_string())),
    };
    RepoFacts::Read {
        backups: listing.backups.len(),
        last_backup: listing.backups.iter().map(|b| b.stop_time).max(),
        last_drill,
        drill_error,
    }
}

fn resource_facts(
    config: &Config,
    opts: &DoctorOptions,
    settings: &BTreeMap<String, String>,
    server_major: u32,
) -> ResourceFacts {
    let local = server_is_local(config);
    // The same detection as `pgvault tune` (cgroup v2, then v1, then /proc), when local.
    let detected = local.then(tune::machine::detect);
    let memory = opts
        .memory_bytes
        .or_else(|| detected.as_ref().and_then(|m| m.memory_bytes));
    let cpus = opts.cpus.or_else(|| detected.as_ref().map(|m| m.cpus));
    let (Some(memory_bytes), Some(cpus)) = (memory, cpus) else {
        return ResourceFacts::NotChecked(format!(
            "the server ({}) is not on this host and --memory/--cpus were not given",
            server::describe(config)
        ));
    };
    let rpo = config
        .objectives
        .rpo
        .as_deref()
        .and_then(|r| pgvault_core::units::parse_duration(r).ok())
        .unwrap_or(Duration::from_secs(300));
    let connections = settings
        .get("max_connections")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let inputs = Inputs {
        memory_bytes,
        cpus,
        storage: opts.storage,
        workload: opts.workload,
        connections,
        pooler: false,
        rpo,
        server_major: Some(server_major),
    };
    ResourceFacts::Advised {
        machine: format!(
            "{}, {cpus} CPU(s), {:?} storage, {:?} workload, {connections} connections",
            pgvault_core::units::format_size(memory_bytes),
            opts.storage,
            opts.workload
        )
        .to_lowercase(),
        recommendations: tune::recommend(&inputs),
    }
}

/// The server is reached over a Unix socket or loopback: this machine's resources are its own.
fn server_is_local(config: &Config) -> bool {
    let host = config.postgres.host.as_str();
    host.starts_with('/') || matches!(host, "" | "localhost" | "127.0.0.1" | "::1")
}
