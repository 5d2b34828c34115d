//! Unit tests of every rule on hand-built facts: one healthy set-up (no finding above info) and
//! broken ones, each planted problem found under its id. Facts mirror the reviewed set-ups: a
//! development box with `listen_addresses = '*'` and a `tuxuser`/`tuxpass` role, a Docker
//! set-up with `shared_buffers` at its 128MB default and no TLS, a Compose stack with pg_hba
//! limited to 10.0.0.0/8.

use std::collections::BTreeMap;

use chrono::{Duration as CDuration, TimeZone, Utc};

use super::facts::*;
use super::{judge, Severity};
use crate::tune::{Recommendation, Typed};

fn healthy() -> Facts {
    let now = Utc.with_ymd_and_hms(2026, 12, 2, 4, 0, 0).unwrap();
    let settings: BTreeMap<String, String> = [
        ("wal_level", "replica"),
        ("archive_mode", "on"),
        (
            "archive_command",
            "/usr/bin/pgvault-archive --config /etc/pgvault/pgvault.toml push %p",
        ),
        ("archive_library", ""),
        ("listen_addresses", "localhost"),
        ("password_encryption", "scram-sha-256"),
        ("ssl", "on"),
        ("fsync", "on"),
        ("full_page_writes", "on"),
        ("data_checksums", "on"),
        ("synchronous_commit", "on"),
        ("shared_buffers", "8GB"),
        ("max_connections", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let rule = |line, kind: &str, addr: Option<&str>, prefix, method: &str| HbaRule {
        line,
        kind: kind.into(),
        databases: vec!["all".into()],
        users: vec!["all".into()],
        address: addr.map(String::from),
        prefix,
        method: method.into(),
    };
    Facts {
        now,
        server_major: 15,
        settings,
        archiver: Some(Archiver {
            failed_count: 0,
            failing_now: false,
            last_failed_wal: None,
            last_archived_wal: Some("000000010000000000000042".into()),
        }),
        slots: vec![Slot {
            name: "standby1".into(),
            kind: "physical".into(),
            active: true,
            retained_bytes: Some(16 << 20),
            wal_status: Some("reserved".into()),
        }],
        roles: vec![
            Role {
                name: "postgres".into(),
                superuser: true,
                can_login: true,
            },
            Role {
                name: "app".into(),
                superuser: false,
                can_login: true,
            },
        ],
        passwords: PasswordAudit::Checked {
            weak: vec![],
            md5: vec![],
        },
        hba: HbaFacts::Read {
            source: "pg_hba.conf".into(),
            rules: vec![
                rule(1, "local", None, None, "peer"),
                rule(2, "hostssl", Some("127.0.0.1"), Some(32), "scram-sha-256"),
                rule(3, "hostssl", Some("10.0.1.0"), Some(24), "scram-sha-256"),
            ],
        },
        repository: RepoFacts::Read {
            backups: 3,
            last_backup: Some(now - CDuration::hours(5)),
            last_drill: Some(LastDrill {
                id: "drill-1".into(),
                at: now - CDuration::days(3),
                passed: true,
            }),
            drill_error: None,
        },
        resources: ResourceFacts::Advised {
            machine: "32gb, 4 cpu(s)".into(),
            recommendations: vec![rec("shared_buffers", "8GB")],
        },
        thresholds: Thresholds::default(),
    }
}

fn rec(name: &'static str, value: &str) -> Recommendation {
    Recommendation {
        name,
        value: value.into(),
        reason: "25% of RAM".into(),
        reference: "pgtune",
        typed: pgvault_core::units::parse_size(value).map_or_else(|_| Typed::Text(value.into()), Typed::Bytes),
        restart: true,
        at_least: false,
    }
}

fn set(f: &mut Facts, name: &str, value: &str) {
    f.settings.insert(name.into(), value.into());
}

fn hba_rules(f: &mut Facts) -> &mut Vec<HbaRule> {
    match &mut f.hba {
        HbaFacts::Read { rules, .. } => rules,
        HbaFacts::Unreadable(_) => panic!("fixture has hba"),
    }
}

fn ids(f: &Facts) -> Vec<&'static str> {
    judge(f).findings.iter().map(|x| x.id).collect()
}

/// Only `id` is found above info (and with the expected severity).
fn only(f: &Facts, id: &str, severity: Severity) {
    let report = judge(f);
    let above: Vec<_> = report.findings.iter().filter(|x| x.severity > Severity::Info).collect();
    assert!(
        above.len() == 1 && above[0].id == id && above[0].severity == severity,
        "expected only {id} ({severity:?}), got {above:#?}"
    );
}

#[test]
fn healthy_has_nothing_to_say() {
    let report = judge(&healthy());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.summary.exit_code, 0);
}

#[test]
fn summarize_wal_off_is_advice_on_17_and_later_only() {
    let mut f = healthy();
    set(&mut f, "summarize_wal", "off");
    f.server_major = 16;
    assert!(
        !ids(&f).contains(&"backup.summarize_wal_off"),
        "no such setting before 17"
    );
    f.server_major = 17;
    let report = judge(&f);
    let found: Vec<_> = report
        .findings
        .iter()
        .filter(|x| x.id == "backup.summarize_wal_off")
        .collect();
    assert_eq!(found.len(), 1, "{:#?}", report.findings);
    assert_eq!(found[0].severity, Severity::Info);
    assert_eq!(report.summary.exit_code, 0, "advice does not change the exit status");
    set(&mut f, "summarize_wal", "on");
    assert!(!ids(&f).contains(&"backup.summarize_wal_off"));
}

#[test]
fn backup_setup_rules() {
    let mut f = healthy();
    set(&mut f, "archive_mode", "off");
    only(&f, "backup.archive_mode_off", Severity::Critical);

    let mut f = healthy();
    set(
        &mut f,
        "archive_command",
        "AWS_SECRET_ACCESS_KEY=hunter2 wal-g wal-push %p",
    );
    only(&f, "backup.archive_command_not_pgvault", Severity::Warning);
    let ev = &judge(&f).findings[0].evidence;
    assert!(
        ev.contains("wal-g") && !ev.contains("hunter2"),
        "no secret in evidence: {ev}"
    );

    let mut f = healthy();
    set(&mut f, "archive_command", "");
    only(&f, "backup.archive_command_empty", Severity::Critical);

    let mut f = healthy();
    set(&mut f, "wal_level", "minimal");
    only(&f, "backup.wal_level_minimal", Severity::Critical);

    let mut f = healthy();
    f.archiver = Some(Archiver {
        failed_count: 12,
        failing_now: true,
        last_failed_wal: Some("000000010000000000000043".into()),
        last_archived_wal: Some("000000010000000000000042".into()),
    });
    only(&f, "backup.archiver_failing", Severity::Critical);
    if let Some(a) = f.archiver.as_mut() {
        a.failing_now = false;
    }
    assert_eq!(ids(&f), vec!["backup.archiver_failed_before"]);
}

#[test]
fn repository_rules() {
    let now = healthy().now;
    let mut f = healthy();
    f.repository = RepoFacts::Read {
        backups: 0,
        last_backup: None,
        last_drill: None,
        drill_error: None,
    };
    let found = ids(&f);
    assert!(
        found.contains(&"backup.no_backup") && found.contains(&"backup.no_drill"),
        "{found:?}"
    );
    assert_eq!(judge(&f).summary.exit_code, 4);

    let mut f = healthy();
    if let RepoFacts::Read { last_backup, .. } = &mut f.repository {
        *last_backup = Some(now - CDuration::hours(37));
    }
    only(&f, "backup.last_backup_old", Severity::Warning);
    f.thresholds.backup_max_age = std::time::Duration::from_secs(48 * 3600);
    assert!(ids(&f).is_empty(), "the threshold decides");

    let mut f = healthy();
    if let RepoFacts::Read { last_drill, .. } = &mut f.repository {
        *last_drill = Some(LastDrill {
            id: "d".into(),
            at: now - CDuration::days(40),
            passed: false,
        });
    }
    let found = ids(&f);
    assert_eq!(found, vec!["backup.drill_failed", "backup.last_drill_old"]);

    let mut f = healthy();
    f.repository = RepoFacts::Unreadable("opening the repository: not found".into());
    only(&f, "backup.repository_unreadable", Severity::Warning);
}

#[test]
fn inactive_slot_holding_wal() {
    let mut f = healthy();
    f.slots[0].active = false;
    only(&f, "backup.inactive_slot", Severity::Warning);
    let finding = &judge(&f).findings[0];
    assert!(
        finding.evidence.contains("standby1") && finding.evidence.contains("16.0MB"),
        "{finding:?}"
    );
    f.slots[0].retained_bytes = Some(0);
    assert!(ids(&f).is_empty(), "a slot holding nothing is harmless");
}

#[test]
fn listen_and_tls_and_encryption() {
    let mut f = healthy();
    set(&mut f, "listen_addresses", "*");
    // Listening everywhere also exposes superusers through the 10.0.1.0/24 line.
    let found = ids(&f);
    assert_eq!(found, vec!["security.superuser_remote", "security.listen_all"]);

    let mut f = healthy();
    set(&mut f, "ssl", "off");
    only(&f, "security.ssl_off", Severity::Warning);

    let mut f = healthy();
    set(&mut f, "password_encryption", "md5");
    only(&f, "security.password_encryption", Severity::Warning);
}

#[test]
fn hba_rules_by_method_and_range() {
    let mut f = healthy();
    hba_rules(&mut f)[1].method = "trust".into();
    only(&f, "security.hba_trust_local", Severity::Warning);

    let mut f = healthy();
    hba_rules(&mut f)[2].method = "trust".into();
    only(&f, "security.hba_trust", Severity::Critical);

    let mut f = healthy();
    hba_rules(&mut f)[2].method = "md5".into();
    only(&f, "security.hba_md5", Severity::Warning);

    let mut f = healthy();
    hba_rules(&mut f)[2].method = "password".into();
    only(&f, "security.hba_password", Severity::Warning);

    // The Compose guide's 10.0.0.0/8, and the internet.
    for (addr, prefix) in [("10.0.0.0", 8), ("0.0.0.0", 0), ("::", 0)] {
        let mut f = healthy();
        let r = &mut hba_rules(&mut f)[2];
        r.address = Some(addr.into());
        r.prefix = Some(prefix);
        only(&f, "security.hba_broad_range", Severity::Warning);
    }
    let mut f = healthy();
    let r = &mut hba_rules(&mut f)[2];
    r.address = Some("0.0.0.0".into());
    r.prefix = Some(0);
    r.method = "reject".into();
    assert!(ids(&f).is_empty(), "a broad reject line is a good line");
}

#[test]
fn superusers_over_the_network() {
    let mut f = healthy();
    set(&mut f, "listen_addresses", "10.0.1.5");
    only(&f, "security.superuser_remote", Severity::Warning);
    // Limited to the application role: fine.
    hba_rules(&mut f)[2].users = vec!["app".into()];
    assert!(ids(&f).is_empty());
    // Named explicitly: found again.
    hba_rules(&mut f)[2].users = vec!["app".into(), "postgres".into()];
    only(&f, "security.superuser_remote", Severity::Warning);
    // No superuser can log in: fine.
    f.roles[0].can_login = false;
    assert!(ids(&f).is_empty());
}

#[test]
fn weak_passwords_are_named_never_spelled() {
    let mut f = healthy();
    f.passwords = PasswordAudit::Checked {
        weak: vec![
            ("tuxuser".into(), Weakness::NameVariant),
            ("app".into(), Weakness::EqualsName),
        ],
        md5: vec!["legacy".into()],
    };
    let report = judge(&f);
    let weak: Vec<_> = report
        .findings
        .iter()
        .filter(|x| x.id == "security.weak_password")
        .map(|x| x.evidence.as_str())
        .collect();
    assert_eq!(
        weak,
        vec![
            "role tuxuser has a password made of its name and a common suffix",
            "role app has a password equal to its name"
        ]
    );
    assert!(report.findings.iter().any(|x| x.id == "security.md5_verifier"));
    assert_eq!(report.summary.exit_code, 4);

    let mut f = healthy();
    f.passwords = PasswordAudit::Unreadable("pg_authid is readable by superusers only".into());
    assert_eq!(ids(&f), vec!["security.password_check_skipped"]);
    assert_eq!(judge(&f).summary.exit_code, 0, "a skipped check is info");
}

#[test]
fn reliability_rules() {
    for (name, id, sev) in [
        ("fsync", "reliability.fsync_off", Severity::Critical),
        (
            "full_page_writes",
            "reliability.full_page_writes_off",
            Severity::Critical,
        ),
        ("data_checksums", "reliability.data_checksums_off", Severity::Warning),
        (
            "synchronous_commit",
            "reliability.synchronous_commit_off",
            Severity::Warning,
        ),
    ] {
        let mut f = healthy();
        set(&mut f, name, "off");
        only(&f, id, sev);
    }
    // synchronous_commit = local / remote_write are not "off".
    let mut f = healthy();
    set(&mut f, "synchronous_commit", "local");
    assert!(ids(&f).is_empty());
}

#[test]
fn resources_against_tune() {
    // The Docker review: shared_buffers at the 128MB default on a 32GB machine.
    let mut f = healthy();
    set(&mut f, "shared_buffers", "128MB");
    only(&f, "resources.far_from_advice", Severity::Warning);
    let finding = &judge(&f).findings[0];
    assert_eq!(
        finding.fix_sql.as_deref(),
        Some("ALTER SYSTEM SET shared_buffers = '8GB'")
    );
    assert!(finding.evidence.contains("128MB") && finding.evidence.contains("8GB"));
    // Within a factor of two: left alone.
    set(&mut f, "shared_buffers", "6GB");
    assert!(ids(&f).is_empty());
    set(&mut f, "shared_buffers", "17GB");
    assert_eq!(ids(&f), vec!["resources.far_from_advice"]);
    // Not a compared setting, or not a size: ignored.
    if let ResourceFacts::Advised { recommendations, .. } = &mut f.resources {
        *recommendations = vec![rec("random_page_cost", "1.1"), rec("archive_mode", "on")];
    }
    assert!(ids(&f).is_empty());

    f.resources = ResourceFacts::NotChecked("remote server".into());
    assert_eq!(ids(&f), vec!["resources.not_checked"]);
}

#[test]
fn the_dev_box_review_is_critical() {
    // Review 4: listen '*', weak credentials, no TLS, no backups; a trust line for good measure.
    let mut f = healthy();
    set(&mut f, "listen_addresses", "*");
    set(&mut f, "ssl", "off");
    set(&mut f, "archive_mode", "off");
    f.passwords = PasswordAudit::Checked {
        weak: vec![("tuxuser".into(), Weakness::NameVariant)],
        md5: vec![],
    };
    f.repository = RepoFacts::Read {
        backups: 0,
        last_backup: None,
        last_drill: None,
        drill_error: None,
    };
    hba_rules(&mut f).push(HbaRule {
        line: 4,
        kind: "host".into(),
        databases: vec!["all".into()],
        users: vec!["all".into()],
        address: Some("0.0.0.0".into()),
        prefix: Some(0),
        method: "trust".into(),
    });
    let report = judge(&f);
    for id in [
        "security.listen_all",
        "security.ssl_off",
        "backup.archive_mode_off",
        "security.weak_password",
        "backup.no_backup",
        "backup.no_drill",
        "security.hba_trust",
        "security.hba_broad_range",
        "security.superuser_remote",
    ] {
        assert!(report.findings.iter().any(|x| x.id == id), "{id} missing: {report:#?}");
    }
    assert_eq!(report.summary.exit_code, 4);
    assert_eq!(report.findings[0].severity, Severity::Critical, "worst first");
}

#[test]
fn rule_ids_are_unique_and_documented() {
    let mut seen = std::collections::HashSet::new();
    let doc = include_str!("../../../../docs/DOCTOR.md");
    for r in super::rules::RULES {
        assert!(seen.insert(r.id), "duplicate rule id {}", r.id);
        assert!(doc.contains(&format!("`{}`", r.id)), "docs/DOCTOR.md lacks {}", r.id);
    }
}

#[test]
fn hba_file_parser() {
    let text = "# comment\nlocal all postgres peer\nhost all all 0.0.0.0/0 md5\n\
                host  db1,db2 app 192.168.1.0 255.255.255.0 scram-sha-256 # x\nhostssl all all ::1/128 trust\n\
                include other.conf\nhost all\n";
    let rules = super::hba::parse_file(text);
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0].kind, "local");
    assert_eq!(rules[0].address, None);
    assert_eq!(rules[1].line, 3);
    assert_eq!(
        (rules[1].address.as_deref(), rules[1].prefix),
        (Some("0.0.0.0"), Some(0))
    );
    assert!(super::hba::is_broad(&rules[1]));
    assert_eq!(rules[2].databases, vec!["db1", "db2"]);
    assert_eq!((rules[2].prefix, rules[2].method.as_str()), (Some(24), "scram-sha-256"));
    assert!(super::hba::is_loopback(&rules[3]) && !super::hba::is_remote(&rules[3]));
    assert_eq!(super::hba::netmask_prefix("255.255.0.255"), None);
    assert_eq!(super::hba::netmask_prefix("ffff:ffff::"), Some(32));
}
