//! The check functions behind the larger rows of [`super::rules::RULES`] (the one-line ones stay
//! inline in the table), and the small helpers they share.

use super::facts::{Facts, HbaFacts, HbaRule};
use super::hba;
use super::rules::Hit;

pub(super) fn setting_is(f: &Facts, name: &str, bad: &str, sql: &str) -> Vec<Hit> {
    if f.setting(name) == bad {
        vec![Hit::new(format!("{name} = {bad}")).sql(sql)]
    } else {
        vec![]
    }
}

pub(super) fn off_hit(f: &Facts, name: &str, sql: &str) -> Vec<Hit> {
    if f.is_off(name) {
        vec![Hit::new(format!("{name} = {}", f.setting(name))).sql(sql)]
    } else {
        vec![]
    }
}

pub(super) fn older_than(
    f: &Facts,
    at: chrono::DateTime<chrono::Utc>,
    max: std::time::Duration,
    what: &str,
) -> Option<Hit> {
    let age = (f.now - at).to_std().ok()?;
    (age > max).then(|| {
        Hit::new(format!(
            "{what} {} ago ({}), more than {}",
            pgvault_core::units::format_duration_rough(f.now - at),
            at.format("%F %T UTC"),
            pgvault_core::units::format_duration(max)
        ))
    })
}

/// The program `archive_command` runs, without any `NAME=value` environment prefix (which
/// may hold a secret and is never printed).
pub fn archive_program(command: &str) -> &str {
    command.split_whitespace().find(|w| !w.contains('=')).unwrap_or("")
}

pub(super) fn archive_not_pgvault(f: &Facts) -> Vec<Hit> {
    if f.is_off("archive_mode") || f.setting("archive_mode").is_empty() {
        return vec![];
    }
    let library = f.setting("archive_library");
    if !library.is_empty() {
        return vec![Hit::new(format!(
            "archive_library = '{library}' archives WAL, not pgvault-archive"
        ))];
    }
    let command = f.setting("archive_command");
    if command.trim().is_empty() || command.contains("pgvault-archive") {
        return vec![];
    }
    vec![Hit::new(format!(
        "archive_command runs '{}', not pgvault-archive",
        archive_program(command)
    ))]
}

pub(super) fn inactive_slots(f: &Facts) -> Vec<Hit> {
    f.slots
        .iter()
        .filter(|s| !s.active && (s.retained_bytes.unwrap_or(0) > 0 || s.wal_status.as_deref() == Some("lost")))
        .map(|s| {
            let held = s
                .retained_bytes
                .map_or("no longer reserved".to_string(), pgvault_core::units::format_size_rough);
            let status = s.wal_status.as_deref().unwrap_or("?");
            Hit::new(format!(
                "{} slot '{}' is inactive and holds {held} of WAL (wal_status {status})",
                s.kind, s.name
            ))
            .sql(format!(
                "SELECT pg_drop_replication_slot('{}')",
                s.name.replace('\'', "''")
            ))
        })
        .collect()
}

pub(super) fn hba_hits(f: &Facts, pred: impl Fn(&HbaRule) -> bool) -> Vec<Hit> {
    match &f.hba {
        HbaFacts::Read { source, rules } => rules
            .iter()
            .filter(|r| pred(r))
            .map(|r| Hit::new(format!("{source} {}", hba::describe(r))))
            .collect(),
        HbaFacts::Unreadable(_) => vec![],
    }
}

/// `listen_addresses` reaches beyond this host.
pub fn listens_remote(f: &Facts) -> bool {
    f.setting("listen_addresses")
        .split(',')
        .map(str::trim)
        .any(|a| !(a.is_empty() || a == "localhost" || a.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())))
}

pub(super) fn superuser_remote(f: &Facts) -> Vec<Hit> {
    if !listens_remote(f) {
        return vec![];
    }
    let supers: Vec<&str> = f
        .roles
        .iter()
        .filter(|r| r.superuser && r.can_login)
        .map(|r| r.name.as_str())
        .collect();
    if supers.is_empty() {
        return vec![];
    }
    let HbaFacts::Read { source, rules } = &f.hba else {
        return vec![];
    };
    let mut hits = Vec::new();
    for r in rules.iter().filter(|r| hba::is_remote(r) && r.method != "reject") {
        let admitted: Vec<&str> = if r.users.iter().any(|u| u == "all") {
            supers.clone()
        } else {
            supers
                .iter()
                .copied()
                .filter(|s| r.users.iter().any(|u| u == s))
                .collect()
        };
        if !admitted.is_empty() {
            hits.push(Hit::new(format!(
                "{source} {} admits superuser(s) {} from {}",
                hba::describe(r),
                admitted.join(", "),
                hba::describe_address(r)
            )));
        }
    }
    hits
}
