//! Tests of configuration parsing and validation.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/pgvault/test.toml"))
}

const BENCH: &str = r#"
[postgres]
host = "/tmp/pgvault-bench"
port = 55432
user = "postgres"
pgdata = "/tmp/pgvault-bench/pg"

[repository]
url = "s3://pgvault/bench"
endpoint = "https://127.0.0.1:8443"
region = "us-east-1"
access_key_id = "benchkey"
secret_access_key = "benchsecret"
ca_file = "/tmp/pgvault-bench/tls/s3.crt"

[compression]
algorithm = "zstd"
level = 3

[encryption]
passphrase_file = "/tmp/pgvault-bench/passphrase"
"#;

#[test]
fn accepts_the_bench_bed_configuration() {
    let c = parse(BENCH).unwrap();
    assert_eq!(c.postgres.port, 55432);
    assert_eq!(c.repository.url, "s3://pgvault/bench");
    assert_eq!(c.compression.level, 3);
    assert_eq!(
        c.compression.archive_level, 1,
        "archived WAL: the fast level by default"
    );
    assert!(
        !format!("{c:?}").contains("benchsecret"),
        "secrets must not reach Debug output"
    );
}

#[test]
fn retention_section_is_checked() {
    let base = "[postgres]\n[repository]\nurl = \"file:///r\"\n";
    assert!(parse(base).unwrap().retention.is_none());
    let c = parse(&format!(
        "{base}[retention]\nkeep_full = 2\nrecovery_window = \"30d\"\nkeep_monthly = 12\norphan_min_age = \"6h\"\n"
    ))
    .unwrap();
    let r = c.retention.unwrap();
    assert_eq!(r.keep_full, Some(2));
    assert!(r.has_policy());
    assert!(!parse(&format!("{base}[retention]\n"))
        .unwrap()
        .retention
        .unwrap()
        .has_policy());
    for (bad, key) in [
        ("recovery_window = \"30\"", "retention.recovery_window"),
        ("recovery_window = \"30 days\"", "retention.recovery_window"),
        ("recovery_window = \"0d\"", "retention.recovery_window"),
        ("keep_full = 0", "retention.keep_full"),
        ("orphan_min_age = \"1x\"", "retention.orphan_min_age"),
        ("keep_dayly = 3", "keep_dayly"),
        ("keep_daily = -1", "keep_daily"),
    ] {
        let err = parse(&format!("{base}[retention]\n{bad}\n")).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains("test.toml"), "{bad}: {err}");
    }
}

#[test]
fn unknown_key_names_key_and_file() {
    let err = parse("[postgres]\nhots = \"x\"\n[repository]\nurl = \"file:///r\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/etc/pgvault/test.toml"), "{msg}");
    assert!(msg.contains("hots"), "{msg}");
}

#[test]
fn missing_value_names_key_and_file() {
    let err = parse("[postgres]\n[repository]\n").unwrap_err().to_string();
    assert!(err.contains("url") && err.contains("test.toml"), "{err}");
}

#[test]
fn bad_values_are_rejected_with_the_key() {
    let base = "[postgres]\n[repository]\nurl = \"file:///r\"\n";
    let err = parse(&format!("{base}[compression]\nlevel = 40\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("compression.level"), "{err}");
    let err = parse(&format!("{base}[compression]\narchive_level = 0\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("compression.archive_level"), "{err}");
    let err = parse(&format!("{base}[compression]\nalgorithm = \"lz5\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("compression.algorithm"), "{err}");
    let err = parse("[postgres]\nsslmode = \"maybe\"\n[repository]\nurl = \"file:///r\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgres.sslmode"), "{err}");
}

#[test]
fn every_sslmode_the_client_supports_is_accepted() {
    for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
        let text = format!("[postgres]\nsslmode = \"{mode}\"\n[repository]\nurl = \"file:///r\"\n");
        assert!(parse(&text).is_ok(), "sslmode {mode} refused");
    }
    let err = parse("[postgres]\nsslmode = \"allow\"\n[repository]\nurl = \"file:///r\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgres.sslmode") && err.contains("prefer"), "{err}");
}

#[test]
fn loose_passphrase_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "[postgres]\n[repository]\nurl = \"file:///r\"\n[encryption]\npassphrase_file = \"{}\"\n",
        pass.display()
    );
    let c = parse(&text).unwrap();
    // The environment variable would take precedence; this test relies on it being unset.
    if std::env::var_os(PASSPHRASE_ENV).is_none() {
        assert!(matches!(c.passphrase(), Err(ConfigError::LoosePermissions { .. })));
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(&c.passphrase().unwrap().unwrap()[..], b"correct horse battery staple");
    }
}

#[test]
fn world_readable_credentials_warn_but_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pgvault.toml");
    std::fs::write(
        &cfg,
        "[postgres]\n[repository]\nurl = \"s3://b/p\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n[encryption]\ncipher = \"none\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = Config::load(Some(&cfg)).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("chmod 600"), "{:?}", c.warnings);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Config::load(Some(&cfg)).unwrap().warnings.is_empty());
}

#[test]
fn schedule_and_metrics_sections_are_checked() {
    let base = "[postgres]\n[repository]\nurl = \"file:///r\"\n";
    let c = parse(base).unwrap();
    assert!(c.schedule.jobs().unwrap().is_empty());
    assert_eq!(c.metrics.listen_addr().unwrap(), None);
    let c = parse(&format!(
        "{base}[schedule]\nbackup = \"0 2 * * *\"\ndrill = \"@weekly\"\ntimezone = \"Europe/Berlin\"\n[metrics]\nlisten = \"127.0.0.1\"\nrefresh = \"30s\"\n"
    ))
    .unwrap();
    let kinds: Vec<_> = c.schedule.jobs().unwrap().iter().map(|j| j.kind.name()).collect();
    assert_eq!(kinds, ["backup", "drill"]);
    let chain = parse(&format!(
        "{base}[schedule]\nbackup = \"0 1 * * 0\"\nbackup_diff = \"0 1 * * 3\"\nbackup_incr = \"0 1 * * *\"\n"
    ))
    .unwrap();
    let kinds: Vec<_> = chain.schedule.jobs().unwrap().iter().map(|j| j.kind.name()).collect();
    assert_eq!(
        kinds,
        ["backup", "backup_diff", "backup_incr"],
        "incremental jobs are real jobs"
    );
    assert_eq!(
        c.metrics.listen_addr().unwrap().unwrap().port(),
        crate::metrics::DEFAULT_PORT
    );
    assert_eq!(c.metrics.refresh().unwrap(), std::time::Duration::from_secs(30));
    for (bad, key) in [
        ("[schedule]\nbackup = \"0 25 * * *\"", "schedule.backup"),
        ("[schedule]\nverify = \"daily\"", "schedule.verify"),
        ("[schedule]\ntimezone = \"Moon/Base\"", "schedule.timezone"),
        ("[schedule]\nbackup_incr = \"0 * * *\"", "schedule.backup_incr"),
        ("[schedule]\nbackup_diff = \"@hourly2\"", "schedule.backup_diff"),
        ("[schedule]\nbackups = \"0 * * * *\"", "backups"),
        ("[metrics]\nlisten = \"my host:1\"", "metrics.listen"),
        ("[metrics]\nlisten = \"localhost:http\"", "metrics.listen"),
        ("[metrics]\nrefresh = \"10\"", "metrics.refresh"),
    ] {
        let err = parse(&format!("{base}{bad}\n")).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains("test.toml"), "{bad}: {err}");
    }
    let c = parse(&format!("{base}[metrics]\nlisten = \"localhost:9999\"\n")).unwrap();
    assert_eq!(c.metrics.listen_addr().unwrap().unwrap().to_string(), "127.0.0.1:9999");
}
